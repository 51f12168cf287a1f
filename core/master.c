/*
 * The master: opens the sockets, then wires the parts that run in it and reacts to signals.
 *   supervise.c  the workers: start, replace, stop
 *   watch.c      file changes in routes/ and scripts/
 *   reload.c     preflight, --reload-check, publication of a new generation
 *   admin.c      the admin listener (status.c and metrics.c render its documents; admin_token.c
 *                its token)
 *   upgrade.c    binary upgrade (SIGUSR2): the sockets handed to a new master; the pid file
 *
 * Signals reach the master through a signalfd watched by its loop (not libev signal watchers), so
 * that libev's per-process signal bookkeeping stays free for the workers it forks.
 */
#include "master.h"

#include <errno.h>
#include <ev.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "admin.h"
#include "admin_token.h"
#include "jwt.h"
#include "log.h"
#include "metrics.h"
#include "pg_migrate.h"
#include "pool.h"
#include "privilege.h"
#include "reload.h"
#include "shared.h"
#include "store.h"
#include "supervise.h"
#include "upgrade.h"
#include "watch.h"
#include "watchdog.h"

static struct {
    struct ev_loop *loop;
    const tr_config_t *cfg;
    tr_shared_t *shared;
    double started_at;
    int *listen_fds;
    int signal_fd;
    ev_io signal_io;
    ev_timer stop_timer;
    int stopping;
    int exit_code;
    tr_supervisor_t workers;
    tr_watchdog_t watchdog;
    tr_upgrade_t upgrade;
    tr_watch_t watch;
    /* A published reload is answered once every worker serves it, or after ROLLOUT_WAIT with the
     * workers that do not (tr_watchdog_behind). */
    uint64_t rollout_generation; /* 0: none pending */
    double rollout_deadline;
    ev_timer rollout_timer;
    tr_reloader_t reloader;
    tr_admin_t admin;
    char admin_token[TR_ADMIN_TOKEN_MAX];
    tr_jwt_keys_t token_keys; /* --token-keys: inherited by the workers at fork (jwt.h) */
    int token_from_env;       /* it came from $TRIAGE_ADMIN_TOKEN: an upgrade hands it on the same way */
} m;

/* ---- sockets ---- */

/*
 * Is something already listening on this address? A probe bound without SO_REUSEPORT collides with
 * any socket bound there, SO_REUSEPORT or not (SO_REUSEADDR only lets it pass TIME_WAIT leftovers).
 * Without the probe, a second triage on the same port would join the first one's SO_REUSEPORT group
 * and the kernel would share the clients between two servers, silently.
 */
static int address_taken(const struct addrinfo *ai)
{
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    int taken = bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno == EADDRINUSE;
    close(fd);
    return taken;
}

/* A listening socket on host:port. reuseport: one of the workers' group (the first of the group
 * probes the address before). Returns the descriptor, or -1 with a message in err. */
static int open_listener(const char *host, int port, int reuseport, int first, char *err, size_t err_size)
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
    if (reuseport && first && address_taken(res)) {
        snprintf(err, err_size,
                 "%s:%d: another server is already listening there (a triage started earlier?); stop it or "
                 "choose another --listen",
                 host, port);
        freeaddrinfo(res);
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

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* ---- wiring ---- */

/* In a new worker: the descriptors only the master uses. */
static void close_master_fds(void *data)
{
    (void)data;
    close(m.signal_fd);
    tr_admin_close_fds(&m.admin);
    explicit_bzero(m.admin_token, sizeof(m.admin_token)); /* a worker runs scripts: it has no use for it */
    if (m.watch.fd >= 0)
        close(m.watch.fd);
    if (m.reloader.check_fd >= 0)
        close(m.reloader.check_fd);
    if (m.reloader.preflight_fd >= 0)
        close(m.reloader.preflight_fd);
    tr_upgrade_close_fds(&m.upgrade);
}

static void reload_published(void *data, uint64_t generation)
{
    (void)data, (void)generation;
    tr_supervise_signal(&m.workers, SIGUSR1);
}

#define ROLLOUT_WAIT 3.0

static void on_rollout_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)t, (void)revents;
    static char behind[16384];
    uint64_t generation = m.rollout_generation;
    int n = tr_watchdog_behind(&m.watchdog, generation, behind, sizeof(behind));
    if (n > 0 && ev_now(loop) < m.rollout_deadline)
        return; /* the workers are still loading it */
    ev_timer_stop(loop, &m.rollout_timer);
    m.rollout_generation = 0;
    if (n > 0)
        tr_log_error("generation %llu: %d worker(s) not serving it %.0f s after it was published: [%s]",
                     (unsigned long long)generation, n, ROLLOUT_WAIT, behind);
    tr_admin_reload_finished(&m.admin, 1, generation, NULL, n > 0 ? behind : NULL);
}

static void reload_finished(void *data, int ok, uint64_t generation, const char *error)
{
    (void)data;
    if (!ok) {
        tr_admin_reload_finished(&m.admin, ok, generation, error, NULL);
        return;
    }
    m.rollout_generation = generation;
    m.rollout_deadline = ev_now(m.loop) + ROLLOUT_WAIT;
    ev_timer_stop(m.loop, &m.rollout_timer);
    ev_timer_init(&m.rollout_timer, on_rollout_timer, 0.02, 0.05);
    ev_timer_start(m.loop, &m.rollout_timer);
}

static void reload_now(void *data)
{
    (void)data;
    tr_reload_start(&m.reloader);
}

/* ---- stopping ---- */

static void on_stop_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)t, (void)revents;
    tr_log_error("workers still running after the shutdown timeout; killing them");
    tr_supervise_signal(&m.workers, SIGKILL);
    ev_break(loop, EVBREAK_ALL);
}

static void begin_stop(void)
{
    if (m.stopping)
        return;
    m.stopping = 1;
    tr_log_info("stopping: finishing in-flight requests (up to %.0f s)", m.cfg->shutdown_timeout);
    tr_upgrade_stop(&m.upgrade);
    tr_admin_stop(&m.admin);
    tr_watchdog_stop(&m.watchdog);
    ev_timer_stop(m.loop, &m.rollout_timer);
    tr_watch_stop(&m.watch);
    tr_reload_stop(&m.reloader);
    for (int i = 0; i < m.cfg->workers; i++)
        close(m.listen_fds[i]);
    tr_supervise_stop(&m.workers);
    ev_timer_init(&m.stop_timer, on_stop_timeout, m.cfg->shutdown_timeout + 2, 0.);
    ev_timer_start(m.loop, &m.stop_timer);
    if (tr_supervise_alive(&m.workers) == 0)
        ev_break(m.loop, EVBREAK_ALL);
}

/* A new master serves (upgrade.h): this one drains as on SIGTERM. */
static void upgrade_replaced(void *data)
{
    (void)data;
    begin_stop();
}

/* This master, started by an upgrade, cannot start its workers: it stops, the old one serves on. */
static void upgrade_failed(void *data)
{
    (void)data;
    m.exit_code = 1;
    begin_stop();
}

/* ---- signals ---- */

static void on_signal(struct ev_loop *loop, ev_io *io, int revents)
{
    struct signalfd_siginfo si;
    (void)io, (void)revents;
    while (read(m.signal_fd, &si, sizeof(si)) == sizeof(si)) {
        switch (si.ssi_signo) {
        case SIGCHLD: {
            int status;
            pid_t pid;
            while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
                if (!tr_supervise_reap(&m.workers, pid, status) && !tr_upgrade_reap(&m.upgrade, pid, status))
                    tr_reload_reap(&m.reloader, pid, status);
            if (m.stopping && tr_supervise_alive(&m.workers) == 0)
                ev_break(loop, EVBREAK_ALL);
            break;
        }
        case SIGTERM:
        case SIGINT: begin_stop(); break;
        case SIGHUP: tr_reload_start(&m.reloader); break;
        case SIGUSR2:
            tr_upgrade_begin(&m.upgrade,
                             si.ssi_code == SI_QUEUE && si.ssi_int == TR_UPGRADE_ASK ? (pid_t)si.ssi_pid : 0,
                             m.listen_fds, m.admin.fd, m.token_from_env ? m.admin_token : NULL);
            break;
        }
    }
}

int tr_master_run(const tr_config_t *cfg)
{
    char err[TR_ERROR_MAX];
    memset(&m, 0, sizeof(m));
    m.cfg = cfg;
    m.admin.fd = m.watch.fd = -1;
    m.started_at = tr_wall_clock();
    signal(SIGPIPE, SIG_IGN); /* writes to closed sockets fail with EPIPE instead */
    raise_fd_limit();

    m.shared = mmap(NULL, sizeof(tr_shared_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m.shared == MAP_FAILED) {
        tr_log_error("mmap: %s", strerror(errno));
        return 1;
    }
    memset(m.shared, 0, sizeof(*m.shared));
    m.shared->metrics = tr_metrics_new(cfg->workers);
    if (m.shared->metrics == NULL) {
        tr_log_error("mmap: %s", strerror(errno));
        return 1;
    }
    m.shared->generation = 1;
    m.shared->generation_loaded_at = m.started_at;
    /* Not the default loop: it would claim SIGCHLD. */
    m.loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    if (tr_upgrade_init(&m.upgrade, m.loop, cfg, err, sizeof(err)) != 0 ||
        (m.shared->store_lock = tr_upgrade_store_lock(&m.upgrade, err, sizeof(err))) == NULL) {
        tr_log_error("upgrade: %s; this master does not start", err);
        return 1;
    }

    /* The workers' user must reach the app and the framework before anything loads them (privilege.h). */
    if (cfg->run_as.root_requested)
        tr_log_error("warning: --user root: the workers and the application's scripts run as root");
    tr_privilege_paths_t code_paths = {.app_dir = cfg->app_dir, .lua_dir = cfg->lua_dir};
    if (tr_privilege_check(&cfg->run_as, &code_paths, err, sizeof(err)) != 0) {
        tr_log_error("cannot start: %s", err);
        return 1;
    }

    /* Refuse to start on an application that does not load: the same preflight as a reload. */
    tr_reload_callbacks_t reload_cb = {.published = reload_published, .finished = reload_finished};
    int nroutes = tr_reload_init(&m.reloader, m.loop, cfg, m.shared, &reload_cb, NULL, err, sizeof(err));
    if (nroutes < 0) {
        tr_log_error("the application in %s does not load: %s", cfg->app_dir, err);
        return 1;
    }

    /* The store: created if new, migrated; a migration that fails stops the start. (The URL is not
     * logged: it may hold a password.) */
    int migrated;
    if (cfg->store_url != NULL) {
        /* The data directory still holds the admin token and the pid file. */
        if (mkdir(cfg->data_dir, 0750) != 0 && errno != EEXIST) {
            snprintf(err, sizeof(err), "cannot create the data directory %s: %s", cfg->data_dir, strerror(errno));
            migrated = -1;
        } else {
            migrated = tr_pg_migrate(cfg->store_url, cfg->app_dir, err, sizeof(err));
        }
    } else {
        migrated = tr_store_migrate(cfg->data_dir, cfg->app_dir, err, sizeof(err));
    }
    if (migrated < 0) {
        if (cfg->store_url != NULL)
            tr_log_error("the store on PostgreSQL cannot be prepared: %s", err);
        else
            tr_log_error("the store in %s cannot be prepared: %s", cfg->data_dir, err);
        tr_reload_cleanup(&m.reloader);
        return 1;
    }
    if (migrated > 0 && cfg->store_url != NULL)
        tr_log_info("store on PostgreSQL: %d migration(s) applied", migrated);
    else if (migrated > 0)
        tr_log_info("store %s/" TR_STORE_FILE ": %d migration(s) applied", cfg->data_dir, migrated);

    /* The store is the workers' once they are not root any more (privilege.h). */
    tr_privilege_paths_t data_paths = {.data_dir = cfg->data_dir};
    if (tr_privilege_give_data(&cfg->run_as, cfg->data_dir, err, sizeof(err)) != 0 ||
        tr_privilege_check(&cfg->run_as, &data_paths, err, sizeof(err)) != 0) {
        tr_log_error("cannot start: %s", err);
        tr_reload_cleanup(&m.reloader);
        return 1;
    }
    /* The admin token, and no admin API open to others without one that the operator chose. */
    int admin_loopback = tr_admin_host_is_loopback(cfg->admin_host);
    const char *env_token = getenv(TR_ADMIN_TOKEN_ENV);
    if (!admin_loopback && (env_token == NULL || *env_token == '\0') && !cfg->admin_token_given) {
        tr_log_error("--admin %s:%d is not a loopback address: anyone who reaches it could use the admin API. "
                     "Configure its token explicitly with --admin-token-file FILE (made with a random token if "
                     "missing) or $" TR_ADMIN_TOKEN_ENV ", or keep --admin on 127.0.0.1",
                     cfg->admin_host, cfg->admin_port);
        tr_reload_cleanup(&m.reloader);
        return 1;
    }
    if (tr_admin_token_load(cfg->admin_token_path, 1, m.admin_token, err, sizeof(err)) < 0) {
        tr_log_error("%s", err);
        tr_reload_cleanup(&m.reloader);
        return 1;
    }
    /* The app's token keys, read while this process may still read a root-only file: the workers,
     * forked after this, hold them in memory and never open the file as their unprivileged user. */
    if (cfg->token_keys != NULL) {
        if (tr_jwt_keys_load(&m.token_keys, cfg->token_keys, err, sizeof(err)) != 0) {
            tr_log_error("cannot start: %s", err);
            tr_reload_cleanup(&m.reloader);
            return 1;
        }
        m.token_keys.skew = cfg->token_skew;
        tr_jwt_use(&m.token_keys);
        tr_log_info("token keys: %d from %s", m.token_keys.count, cfg->token_keys);
    }
    /* Read: the workers' scripts and --reload-check need not see it. Wiped in place first, because a
     * forked worker's /proc/self/environ shows the strings the master started with, not environ. */
    char *env_value = getenv(TR_ADMIN_TOKEN_ENV);
    m.token_from_env = env_value != NULL && *env_value != '\0';
    if (env_value != NULL)
        explicit_bzero(env_value, strlen(env_value));
    unsetenv(TR_ADMIN_TOKEN_ENV);

    m.listen_fds = tr_mem_alloc(sizeof(int) * (size_t)cfg->workers);
    for (int i = 0; i < cfg->workers; i++) {
        m.listen_fds[i] = tr_upgrade_listener(&m.upgrade, i, open_listener, err, sizeof(err));
        if (m.listen_fds[i] < 0) {
            tr_log_error("cannot listen on %s", err);
            tr_reload_cleanup(&m.reloader);
            return 1;
        }
    }
    tr_upgrade_drop_unused(&m.upgrade);
    int admin_fd = tr_upgrade_listener(&m.upgrade, -1, open_listener, err, sizeof(err));
    if (admin_fd < 0) {
        tr_log_error("cannot open the admin listener on %s", err);
        tr_reload_cleanup(&m.reloader);
        return 1;
    }

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGUSR2);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    m.signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    ev_io_init(&m.signal_io, on_signal, m.signal_fd, EV_READ);
    ev_io_start(m.loop, &m.signal_io);

    tr_admin_options_t admin_opt = {.token = m.admin_token, .loopback = admin_loopback, .metrics = m.shared->metrics};
    tr_admin_start(&m.admin, m.loop, admin_fd, m.shared, cfg->workers, m.started_at, &admin_opt, reload_now, NULL);
    if (cfg->watch) {
        int rc = tr_watch_start(&m.watch, m.loop, cfg->app_dir, cfg->reload_check != NULL, reload_now, NULL);
        if (rc != 0)
            tr_log_error("inotify: %s; file changes will not reload (SIGHUP still does)", strerror(-rc));
    }
    tr_supervise_start(&m.workers, m.loop, cfg, m.shared, m.listen_fds, close_master_fds, NULL);
    tr_watchdog_start(&m.watchdog, m.loop, m.shared, &m.workers, cfg->handler_timeout);
    tr_upgrade_started(&m.upgrade, &m.workers, m.shared, upgrade_replaced, upgrade_failed, NULL);
    tr_log_info("triage serving %s (%d routes) on %s:%d with %d workers (user %s); admin on %s:%d", cfg->app_dir,
                nroutes, cfg->listen_host, cfg->listen_port, cfg->workers,
                cfg->run_as.change           ? cfg->run_as.name
                : cfg->run_as.root_requested ? "root"
                                             : "unchanged",
                cfg->admin_host, cfg->admin_port);

    ev_run(m.loop, 0);

    tr_reload_cleanup(&m.reloader);
    tr_upgrade_exit(&m.upgrade);
    tr_log_info("stopped");
    return m.exit_code;
}
