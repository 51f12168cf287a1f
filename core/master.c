/*
 * The master: sockets, worker supervision, the admin listener, and reloads (file watch, preflight,
 * optional check command, publication to the workers).
 *
 * Signals reach the master through a signalfd watched by its loop (not libev signal watchers), so
 * that libev's per-process signal bookkeeping stays free for the workers it forks.
 */
#include "master.h"

#include <dirent.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "admin.h"
#include "log.h"
#include "lua_vm.h"
#include "pool.h"
#include "reload.h"
#include "shared.h"
#include "worker.h"

#define ADMIN_REQUEST_MAX 8192
#define RELOAD_DEBOUNCE 0.03
#define RELOAD_CHECK_TIMEOUT 300.0
#define RELOAD_OUTPUT_MAX (TR_ERROR_MAX - 256)
#define CRASH_WINDOW 1.0

typedef struct admin_conn_s admin_conn_t;
struct admin_conn_s {
    int fd;
    ev_io io;
    size_t len;
    char buf[ADMIN_REQUEST_MAX];
    admin_conn_t *next_waiting; /* waiting for a reload to finish */
};

typedef struct slot_s {
    pid_t pid;
    double started;
    int quick_exits; /* consecutive exits within CRASH_WINDOW of starting */
    double respawn_at;
} slot_t;

static struct {
    struct ev_loop *loop;
    const tr_config_t *cfg;
    tr_shared_t *shared;
    double started_at;
    int *listen_fds;
    slot_t *slots;
    int signal_fd;
    ev_io signal_io;
    int admin_fd;
    ev_io admin_io;
    ev_timer respawn_timer;
    ev_timer stop_timer;
    int stopping;
    tr_bufpool_t bufs;
    /* reloads */
    int inotify_fd;
    ev_io inotify_io;
    ev_timer debounce;
    int reloading;    /* a check command is running */
    int reload_again; /* files changed while it ran */
    uint64_t pending_generation;
    uint64_t pending_hash; /* of the snapshot being checked */
    pid_t check_pid;
    int check_fd;
    ev_io check_io;
    ev_timer check_timeout;
    tr_buf_t check_output;
    admin_conn_t *reload_waiters;
} m;

/* ---- sockets ---- */

static int open_listener(const char *host, int port, int reuseport, char *err, size_t err_size)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res;
    char service[16];
    snprintf(service, sizeof(service), "%d", port);
    int rc = getaddrinfo(host, service, &hints, &res);
    if (rc != 0) {
        snprintf(err, err_size, "%s:%d: %s", host, port, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 4096) != 0) {
        snprintf(err, err_size, "%s:%d: %s", host, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

/* ---- workers ---- */

static void spawn(int slot)
{
    pid_t pid = fork();
    if (pid < 0) {
        tr_log_error("fork: %s; retrying", strerror(errno));
        m.slots[slot].respawn_at = ev_now(m.loop) + 0.2;
        return;
    }
    if (pid == 0) {
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        close(m.signal_fd);
        if (m.admin_fd >= 0)
            close(m.admin_fd);
        if (m.inotify_fd >= 0)
            close(m.inotify_fd);
        for (int i = 0; i < m.cfg->workers; i++)
            if (i != slot)
                close(m.listen_fds[i]);
        ev_loop_destroy(m.loop);
        _exit(tr_worker_run(m.cfg, slot, m.listen_fds[slot], m.shared));
    }
    m.slots[slot].pid = pid;
    m.slots[slot].started = ev_now(m.loop);
    m.slots[slot].respawn_at = 0;
}

static void on_respawn_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)t, (void)revents;
    double now = ev_now(loop), next = 0;
    for (int i = 0; i < m.cfg->workers; i++) {
        slot_t *s = &m.slots[i];
        if (s->pid != 0 || s->respawn_at == 0 || m.stopping)
            continue;
        if (s->respawn_at <= now)
            spawn(i);
        else if (next == 0 || s->respawn_at < next)
            next = s->respawn_at;
    }
    if (next > 0) {
        ev_timer_set(&m.respawn_timer, next - now, 0.);
        ev_timer_start(loop, &m.respawn_timer);
    }
}

static void reload_check_finished(int status);

static void worker_exited(pid_t pid, int status)
{
    for (int i = 0; i < m.cfg->workers; i++) {
        slot_t *s = &m.slots[i];
        if (s->pid != pid)
            continue;
        s->pid = 0;
        m.shared->workers[i].pid = 0;
        m.shared->workers[i].connections = 0;
        if (m.stopping)
            return;
        if (WIFSIGNALED(status))
            tr_log_error("worker %d (pid %d) killed by signal %d; replacing it", i, (int)pid, WTERMSIG(status));
        else
            tr_log_error("worker %d (pid %d) exited with status %d; replacing it", i, (int)pid, WEXITSTATUS(status));
        double now = ev_now(m.loop);
        s->quick_exits = now - s->started < CRASH_WINDOW ? s->quick_exits + 1 : 0;
        /* A worker that crashes right after starting is retried with a growing delay (<= 1 s). */
        double delay = s->quick_exits < 3 ? 0 : (s->quick_exits < 6 ? 0.2 : 1.0);
        if (delay == 0) {
            spawn(i);
        } else {
            s->respawn_at = now + delay;
            ev_timer_stop(m.loop, &m.respawn_timer);
            ev_timer_set(&m.respawn_timer, delay, 0.);
            ev_timer_start(m.loop, &m.respawn_timer);
        }
        return;
    }
    if (pid == m.check_pid)
        reload_check_finished(status);
}

static int workers_alive(void)
{
    int n = 0;
    for (int i = 0; i < m.cfg->workers; i++)
        n += m.slots[i].pid != 0;
    return n;
}

static void signal_workers(int sig)
{
    for (int i = 0; i < m.cfg->workers; i++)
        if (m.slots[i].pid != 0)
            kill(m.slots[i].pid, sig);
}

static void on_stop_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)t, (void)revents;
    tr_log_error("workers still running after the shutdown timeout; killing them");
    signal_workers(SIGKILL);
    ev_break(loop, EVBREAK_ALL);
}

static void begin_stop(void)
{
    if (m.stopping)
        return;
    m.stopping = 1;
    tr_log_info("stopping: finishing in-flight requests (up to %.0f s)", m.cfg->shutdown_timeout);
    if (m.admin_fd >= 0) {
        ev_io_stop(m.loop, &m.admin_io);
        close(m.admin_fd);
        m.admin_fd = -1;
    }
    if (m.check_pid > 0)
        kill(m.check_pid, SIGKILL);
    for (int i = 0; i < m.cfg->workers; i++)
        close(m.listen_fds[i]);
    signal_workers(SIGTERM);
    ev_timer_init(&m.stop_timer, on_stop_timeout, m.cfg->shutdown_timeout + 2, 0.);
    ev_timer_start(m.loop, &m.stop_timer);
    if (workers_alive() == 0)
        ev_break(m.loop, EVBREAK_ALL);
}

/* ---- reloads ---- */

static void reply_reload_waiters(int ok, const char *error);

/* Where generation `generation`'s snapshot of the code lives. */
static const char *code_dir(uint64_t generation, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%llu", m.shared->code_root, (unsigned long long)generation);
    return buf;
}

static void reload_failed(const char *error)
{
    snprintf(m.shared->last_reload_error, sizeof(m.shared->last_reload_error), "%s", error);
    m.shared->reload_failures++;
    m.shared->last_reload_at = tr_wall_clock();
    tr_log_error("reload rejected, the running code stays: %s", error);
    reply_reload_waiters(0, error);
}

static void publish(uint64_t generation)
{
    m.shared->generation = generation;
    m.shared->generation_loaded_at = tr_wall_clock();
    m.shared->last_reload_at = m.shared->generation_loaded_at;
    m.shared->last_reload_error[0] = '\0';
    m.shared->reloads++;
    signal_workers(SIGUSR1);
    tr_log_info("generation %llu published", (unsigned long long)generation);
    reply_reload_waiters(1, NULL);
    if (generation > 3) { /* a worker still loading a snapshot this old would be three reloads late */
        char dir[4096];
        tr_reload_remove(code_dir(generation - 3, dir, sizeof(dir)));
    }
}

static void start_reload(void);

static void reload_done(void)
{
    m.reloading = 0;
    if (m.reload_again) {
        m.reload_again = 0;
        start_reload();
    }
}

static void on_check_output(struct ev_loop *loop, ev_io *io, int revents)
{
    char tmp[4096];
    (void)revents;
    ssize_t n = read(m.check_fd, tmp, sizeof(tmp));
    if (n > 0) {
        /* Keep the tail: that is where test runners print their verdict. */
        if (m.check_output.len + (size_t)n > RELOAD_OUTPUT_MAX) {
            size_t drop = m.check_output.len + (size_t)n - RELOAD_OUTPUT_MAX;
            if (drop > m.check_output.len)
                drop = m.check_output.len;
            memmove(m.check_output.data, m.check_output.data + drop, m.check_output.len - drop);
            m.check_output.len -= drop;
        }
        tr_buf_append(&m.bufs, &m.check_output, tmp, (size_t)n > RELOAD_OUTPUT_MAX ? RELOAD_OUTPUT_MAX : (size_t)n);
    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        ev_io_stop(loop, io);
        close(m.check_fd);
        m.check_fd = -1;
    }
}

static void on_check_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)t, (void)revents;
    if (m.check_pid > 0)
        kill(-m.check_pid, SIGKILL);
}

static void reload_check_finished(int status)
{
    m.check_pid = 0;
    ev_timer_stop(m.loop, &m.check_timeout);
    if (m.check_fd >= 0) { /* collect what is left in the pipe */
        ev_io_stop(m.loop, &m.check_io);
        fcntl(m.check_fd, F_SETFL, 0);
        on_check_output(m.loop, &m.check_io, 0);
        while (m.check_fd >= 0)
            on_check_output(m.loop, &m.check_io, 0);
    }
    tr_buf_append(&m.bufs, &m.check_output, "", 1);
    char dir[4096];
    code_dir(m.pending_generation, dir, sizeof(dir));
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        if (tr_reload_tree_hash(m.cfg->app_dir) == m.pending_hash) {
            publish(m.pending_generation);
        } else {
            /* What passed is not what is on disk any more: check the new tree before anything goes live. */
            tr_log_info("the code changed while --reload-check ran; checking the new tree");
            tr_reload_remove(dir);
            m.reload_again = 1;
        }
    } else {
        tr_reload_remove(dir);
        char msg[TR_ERROR_MAX];
        snprintf(msg, sizeof(msg), "--reload-check '%s' %s %d:\n%s", m.cfg->reload_check,
                 WIFEXITED(status) ? "exited with status" : "was killed by signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), m.check_output.data);
        reload_failed(msg);
    }
    tr_buf_release(&m.bufs, &m.check_output);
    reload_done();
}

static int start_check(void)
{
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(pipefd[0]);
        close(pipefd[1]);
        return -1;
    }
    if (pid == 0) {
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        setpgid(0, 0);
        dup2(pipefd[1], 1);
        dup2(pipefd[1], 2);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, 0);
        if (chdir(m.cfg->app_dir) != 0)
            _exit(127);
        setenv("TRIAGE_APP", m.cfg->app_dir, 1);
        execl("/bin/sh", "sh", "-c", m.cfg->reload_check, (char *)NULL);
        _exit(127);
    }
    close(pipefd[1]);
    fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
    m.check_pid = pid;
    m.check_fd = pipefd[0];
    ev_io_init(&m.check_io, on_check_output, m.check_fd, EV_READ);
    ev_io_start(m.loop, &m.check_io);
    ev_timer_init(&m.check_timeout, on_check_timeout, RELOAD_CHECK_TIMEOUT, 0.);
    ev_timer_start(m.loop, &m.check_timeout);
    return 0;
}

/*
 * Preflight the tree as it is now in a scratch state: compile every script, run the route files,
 * build the router. Only a tree that passes (and passes --reload-check) is published.
 */
static void start_reload(void)
{
    if (m.stopping)
        return;
    if (m.reloading) {
        m.reload_again = 1;
        return;
    }
    char err[TR_ERROR_MAX], dir[4096];
    uint64_t next = m.shared->generation + 1, hash;
    code_dir(next, dir, sizeof(dir));
    tr_gen_t *gen = NULL;
    if (tr_reload_snapshot(m.cfg->app_dir, dir, &hash, err, sizeof(err)) == 0)
        gen = tr_gen_new(m.cfg, next, dir, NULL, 0, err, sizeof(err));
    if (gen == NULL) {
        tr_reload_remove(dir);
        reload_failed(err);
        return;
    }
    tr_gen_free(gen);
    if (m.cfg->reload_check == NULL) {
        publish(next);
        return;
    }
    m.pending_generation = next;
    m.pending_hash = hash;
    m.reloading = 1;
    if (start_check() != 0) {
        snprintf(err, sizeof(err), "--reload-check could not be started: %s", strerror(errno));
        reload_failed(err);
        reload_done();
    }
}

static void on_debounce(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)t, (void)revents;
    start_reload();
}

static void watch_tree(const char *dir)
{
    if (inotify_add_watch(m.inotify_fd, dir,
                          IN_CLOSE_WRITE | IN_MODIFY | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE |
                              IN_DELETE_SELF | IN_ONLYDIR) < 0)
        return;
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
            watch_tree(path);
    }
    closedir(d);
}

static int counts_for_reload(const struct inotify_event *ev)
{
    if (ev->mask & (IN_ISDIR | IN_DELETE_SELF))
        return 1;
    if (ev->len == 0)
        return 0;
    size_t n = strlen(ev->name);
    return n > 4 && strcmp(ev->name + n - 4, ".lua") == 0 && ev->name[0] != '.';
}

static void on_inotify(struct ev_loop *loop, ev_io *io, int revents)
{
    char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
    (void)io, (void)revents;
    int changed = 0, rescan = 0;
    ssize_t n;
    while ((n = read(m.inotify_fd, buf, sizeof(buf))) > 0) {
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            changed |= counts_for_reload(ev);
            rescan |= (ev->mask & IN_ISDIR) && (ev->mask & (IN_CREATE | IN_MOVED_TO));
            p += sizeof(*ev) + ev->len;
        }
    }
    if (rescan) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/scripts", m.cfg->app_dir);
        watch_tree(path);
        snprintf(path, sizeof(path), "%s/routes", m.cfg->app_dir);
        watch_tree(path);
    }
    if (changed) {
        /* A burst of saves (an editor's write + rename, a checkout) becomes one reload. */
        ev_timer_stop(loop, &m.debounce);
        ev_timer_set(&m.debounce, RELOAD_DEBOUNCE, 0.);
        ev_timer_start(loop, &m.debounce);
    }
}

static void start_watching(void)
{
    m.inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (m.inotify_fd < 0) {
        tr_log_error("inotify: %s; file changes will not reload (SIGHUP still does)", strerror(errno));
        return;
    }
    char path[4096];
    snprintf(path, sizeof(path), "%s/routes", m.cfg->app_dir);
    watch_tree(path);
    snprintf(path, sizeof(path), "%s/scripts", m.cfg->app_dir);
    watch_tree(path);
    ev_io_init(&m.inotify_io, on_inotify, m.inotify_fd, EV_READ);
    ev_io_start(m.loop, &m.inotify_io);
}

/* ---- admin listener ---- */

static void admin_close(admin_conn_t *a)
{
    ev_io_stop(m.loop, &a->io);
    close(a->fd);
    tr_mem_free(a);
}

static void admin_reply(admin_conn_t *a, int status, const char *body, size_t len)
{
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nServer: triage\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n",
                     status,
                     status == 200   ? "OK"
                     : status == 404 ? "Not Found"
                     : status == 409 ? "Conflict"
                                     : "Bad Request",
                     len);
    /* Admin answers are small and the socket is fresh: a blocking write of both parts is fine. */
    int flags = fcntl(a->fd, F_GETFL);
    fcntl(a->fd, F_SETFL, flags & ~O_NONBLOCK);
    struct timeval tv = {.tv_sec = 2};
    setsockopt(a->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (write(a->fd, head, (size_t)n) == n)
        (void)!write(a->fd, body, len);
    admin_close(a);
}

static void reply_reload_waiters(int ok, const char *error)
{
    while (m.reload_waiters != NULL) {
        admin_conn_t *a = m.reload_waiters;
        m.reload_waiters = a->next_waiting;
        tr_buf_t out = {0};
        if (ok) {
            char tmp[128];
            int n = snprintf(tmp, sizeof(tmp), "{\"ok\":true,\"generation\":%llu}",
                             (unsigned long long)m.shared->generation);
            tr_buf_append(&m.bufs, &out, tmp, (size_t)n);
        } else {
            tr_buf_append(&m.bufs, &out, "{\"ok\":false,\"error\":", 20);
            tr_admin_json_string(&m.bufs, &out, error);
            tr_buf_append(&m.bufs, &out, "}", 1);
        }
        admin_reply(a, ok ? 200 : 409, out.data, out.len);
        tr_buf_release(&m.bufs, &out);
    }
}

static void admin_handle(admin_conn_t *a)
{
    if (strncmp(a->buf, "GET /_triage/status ", 20) == 0 || strncmp(a->buf, "GET /_triage/status?", 20) == 0) {
        tr_buf_t out = {0};
        tr_admin_status_json(&m.bufs, &out, m.shared, m.cfg->workers, m.started_at);
        admin_reply(a, 200, out.data, out.len);
        tr_buf_release(&m.bufs, &out);
    } else if (strncmp(a->buf, "POST /_triage/reload ", 21) == 0) {
        ev_io_stop(m.loop, &a->io);
        a->next_waiting = m.reload_waiters;
        m.reload_waiters = a;
        start_reload();
    } else {
        static const char body[] =
            "{\"error\":\"not found\",\"endpoints\":[\"GET /_triage/status\",\"POST /_triage/reload\"]}";
        admin_reply(a, 404, body, sizeof(body) - 1);
    }
}

static void on_admin_readable(struct ev_loop *loop, ev_io *io, int revents)
{
    admin_conn_t *a = io->data;
    (void)loop, (void)revents;
    ssize_t n = read(a->fd, a->buf + a->len, sizeof(a->buf) - 1 - a->len);
    if (n <= 0) {
        if (n == 0 || (errno != EAGAIN && errno != EINTR))
            admin_close(a);
        return;
    }
    a->len += (size_t)n;
    a->buf[a->len] = '\0';
    if (strstr(a->buf, "\r\n\r\n") != NULL || strstr(a->buf, "\n\n") != NULL)
        admin_handle(a);
    else if (a->len == sizeof(a->buf) - 1)
        admin_reply(a, 400, "{\"error\":\"bad request\"}", 23);
}

static void on_admin_accept(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)io, (void)revents;
    for (;;) {
        int fd = accept4(m.admin_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        admin_conn_t *a = tr_mem_alloc(sizeof(*a));
        a->fd = fd;
        a->len = 0;
        a->next_waiting = NULL;
        ev_io_init(&a->io, on_admin_readable, fd, EV_READ);
        a->io.data = a;
        ev_io_start(loop, &a->io);
    }
}

/* ---- signals ---- */

static void on_signal(struct ev_loop *loop, ev_io *io, int revents)
{
    struct signalfd_siginfo si;
    (void)loop, (void)io, (void)revents;
    while (read(m.signal_fd, &si, sizeof(si)) == sizeof(si)) {
        switch (si.ssi_signo) {
        case SIGCHLD: {
            int status;
            pid_t pid;
            while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
                worker_exited(pid, status);
            if (m.stopping && workers_alive() == 0)
                ev_break(loop, EVBREAK_ALL);
            break;
        }
        case SIGTERM:
        case SIGINT: begin_stop(); break;
        case SIGHUP: start_reload(); break;
        }
    }
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int tr_master_run(const tr_config_t *cfg)
{
    char err[TR_ERROR_MAX];
    memset(&m, 0, sizeof(m));
    m.cfg = cfg;
    m.admin_fd = m.inotify_fd = m.check_fd = -1;
    m.started_at = tr_wall_clock();
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();

    m.shared = mmap(NULL, sizeof(tr_shared_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m.shared == MAP_FAILED) {
        tr_log_error("mmap: %s", strerror(errno));
        return 1;
    }
    memset(m.shared, 0, sizeof(*m.shared));
    m.shared->generation = 1;
    m.shared->generation_loaded_at = m.started_at;
    const char *tmp = getenv("TMPDIR");
    snprintf(m.shared->code_root, sizeof(m.shared->code_root), "%s/triage-code-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (mkdtemp(m.shared->code_root) == NULL) {
        tr_log_error("cannot create a directory for code snapshots in %s: %s", tmp && *tmp ? tmp : "/tmp",
                     strerror(errno));
        return 1;
    }

    /* Refuse to start on an application that does not load: same preflight as a reload. */
    char dir[4096];
    uint64_t hash;
    tr_gen_t *gen = NULL;
    if (tr_reload_snapshot(cfg->app_dir, code_dir(1, dir, sizeof(dir)), &hash, err, sizeof(err)) == 0)
        gen = tr_gen_new(cfg, 1, dir, NULL, 0, err, sizeof(err));
    if (gen == NULL) {
        tr_log_error("the application in %s does not load: %s", cfg->app_dir, err);
        tr_reload_remove(m.shared->code_root);
        return 1;
    }
    unsigned nroutes = tr_router_count(gen->router);
    tr_gen_free(gen);

    m.listen_fds = tr_mem_alloc(sizeof(int) * (size_t)cfg->workers);
    m.slots = tr_mem_alloc(sizeof(slot_t) * (size_t)cfg->workers);
    memset(m.slots, 0, sizeof(slot_t) * (size_t)cfg->workers);
    for (int i = 0; i < cfg->workers; i++) {
        m.listen_fds[i] = open_listener(cfg->listen_host, cfg->listen_port, 1, err, sizeof(err));
        if (m.listen_fds[i] < 0) {
            tr_log_error("cannot listen on %s", err);
            return 1;
        }
    }
    m.admin_fd = open_listener(cfg->admin_host, cfg->admin_port, 0, err, sizeof(err));
    if (m.admin_fd < 0) {
        tr_log_error("cannot open the admin listener on %s", err);
        return 1;
    }

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    m.signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);

    m.loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK); /* not the default loop: it would claim SIGCHLD */
    ev_io_init(&m.signal_io, on_signal, m.signal_fd, EV_READ);
    ev_io_start(m.loop, &m.signal_io);
    ev_io_init(&m.admin_io, on_admin_accept, m.admin_fd, EV_READ);
    ev_io_start(m.loop, &m.admin_io);
    ev_timer_init(&m.respawn_timer, on_respawn_timer, 0., 0.);
    ev_timer_init(&m.debounce, on_debounce, RELOAD_DEBOUNCE, 0.);
    if (cfg->watch)
        start_watching();

    for (int i = 0; i < cfg->workers; i++)
        spawn(i);
    tr_log_info("triage serving %s (%u routes) on %s:%d with %d workers; admin on %s:%d", cfg->app_dir, nroutes,
                cfg->listen_host, cfg->listen_port, cfg->workers, cfg->admin_host, cfg->admin_port);

    ev_run(m.loop, 0);

    tr_reload_remove(m.shared->code_root);
    tr_log_info("stopped");
    return 0;
}
