/*
 * Binary upgrade and the pid file: see upgrade.h.
 *
 * What a new master inherits, in TR_UPGRADE_ENV: "listen=FD,FD,... admin=FD lock=FD ready=FD", the
 * workers' sockets by slot, the admin socket, the store lock's memfd and the write end of the
 * readiness pipe. These descriptors lose close-on-exec only in the forked child, just before exec,
 * so no other child of the old master ever holds them.
 */
#include "upgrade.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "admin_token.h"
#include "log.h"

#define LOCK_MAGIC 0x74724c31u /* "trL1": the layout of lock_page_t */
#define QUICK_EXITS_GIVE_UP 3  /* a worker exiting this many times in a row at start: the app does not load */

typedef struct lock_page_s {
    uint32_t magic;
    uint32_t size;
    tr_store_lock_t lock;
} lock_page_t;

static char exe_path[3 * PATH_MAX]; /* room for a working directory, a PATH entry and a name */
static char **saved_argv;

/* ---- the binary ---- */

void tr_upgrade_remember(int argc, char **argv)
{
    (void)argc;
    saved_argv = argv;
    const char *name = argv[0];
    char cwd[PATH_MAX];
    if (strchr(name, '/') != NULL) {
        /* Absolute, not resolved: a symlink switched to another version later is followed at exec. */
        if (name[0] == '/')
            snprintf(exe_path, sizeof(exe_path), "%s", name);
        else if (getcwd(cwd, sizeof(cwd)) != NULL)
            snprintf(exe_path, sizeof(exe_path), "%s/%s", cwd, name);
        return;
    }
    const char *path = getenv("PATH");
    while (path != NULL && *path != '\0') {
        const char *end = strchr(path, ':');
        size_t len = end ? (size_t)(end - path) : strlen(path);
        char candidate[2 * PATH_MAX];
        snprintf(candidate, sizeof(candidate), "%.*s/%s", (int)len, len ? path : ".", name);
        if (access(candidate, X_OK) == 0) {
            if (candidate[0] != '/' && getcwd(cwd, sizeof(cwd)) != NULL)
                snprintf(exe_path, sizeof(exe_path), "%s/%s", cwd, candidate);
            else
                snprintf(exe_path, sizeof(exe_path), "%s", candidate);
            return;
        }
        path = end ? end + 1 : NULL;
    }
    ssize_t n = readlink("/proc/self/exe", exe_path, sizeof(exe_path) - 1);
    exe_path[n > 0 ? n : 0] = '\0';
}

/* ---- the pid file ---- */

static void pid_file_path(const tr_config_t *cfg, char *buf, size_t size)
{
    snprintf(buf, size, "%s/" TR_PID_FILE, cfg->data_dir);
}

/* Written to a temporary name and renamed: a reader never sees it half written. */
static void write_pid_file(const tr_config_t *cfg)
{
    char path[PATH_MAX], tmp[PATH_MAX + 32];
    pid_file_path(cfg, path, sizeof(path));
    snprintf(tmp, sizeof(tmp), "%s.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "we");
    int ok = f != NULL && fprintf(f, "%d\n", (int)getpid()) > 0;
    if (f != NULL && fclose(f) != 0)
        ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        tr_log_error("cannot write the pid file %s: %s (`triage upgrade` will not find this master)", path,
                     strerror(errno));
        unlink(tmp);
    }
}

static pid_t read_pid_file(const char *path)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return 0;
    int pid = 0;
    if (fscanf(f, "%d", &pid) != 1)
        pid = 0;
    fclose(f);
    return pid > 0 ? (pid_t)pid : 0;
}

void tr_upgrade_exit(tr_upgrade_t *u)
{
    char path[PATH_MAX];
    pid_file_path(u->cfg, path, sizeof(path));
    if (read_pid_file(path) == getpid()) /* a new master that took over has written its own */
        unlink(path);
}

/* ---- what a new master inherits ---- */

static int take_fd(const char *text, int *fd)
{
    char *end;
    long v = strtol(text, &end, 10);
    if (end == text || v < 0 || v > INT_MAX || fcntl((int)v, F_GETFD) < 0)
        return -1;
    *fd = (int)v;
    fcntl(*fd, F_SETFD, FD_CLOEXEC);
    return (int)(end - text);
}

int tr_upgrade_init(tr_upgrade_t *u, struct ev_loop *loop, const tr_config_t *cfg, char *err, size_t err_size)
{
    memset(u, 0, sizeof(*u));
    u->loop = loop;
    u->cfg = cfg;
    u->inherited_admin = u->lock_fd = u->notify_fd = u->ready_fd = -1;
    const char *env = getenv(TR_UPGRADE_ENV);
    if (env == NULL)
        return 0;
    char given[4096], text[4096];
    snprintf(given, sizeof(given), "%s", env);
    snprintf(text, sizeof(text), "%s", env);
    env = given;
    unsetenv(TR_UPGRADE_ENV); /* not for the workers, nor for a later upgrade */
    char *save = NULL;
    for (char *tok = strtok_r(text, " ", &save); tok != NULL; tok = strtok_r(NULL, " ", &save)) {
        int n = 0;
        if (strncmp(tok, "listen=", 7) == 0) {
            char *save_fd = NULL;
            for (char *fd = strtok_r(tok + 7, ",", &save_fd); fd != NULL && n >= 0; fd = strtok_r(NULL, ",", &save_fd))
                n = u->inherited_count == TR_MAX_WORKERS ? -1 : take_fd(fd, &u->inherited_listen[u->inherited_count++]);
        } else if (strncmp(tok, "admin=", 6) == 0) {
            n = take_fd(tok + 6, &u->inherited_admin);
        } else if (strncmp(tok, "lock=", 5) == 0) {
            n = take_fd(tok + 5, &u->lock_fd);
        } else if (strncmp(tok, "ready=", 6) == 0) {
            n = take_fd(tok + 6, &u->notify_fd);
        } else {
            n = -1;
        }
        if (n < 0) {
            snprintf(err, err_size, "%s=\"%s\": '%s' is not a descriptor this process inherited", TR_UPGRADE_ENV, env,
                     tok);
            return -1;
        }
    }
    if (u->inherited_count == 0 || u->inherited_admin < 0 || u->notify_fd < 0) {
        snprintf(err, err_size, "%s=\"%s\" lacks listen=, admin= or ready=", TR_UPGRADE_ENV, env);
        return -1;
    }
    tr_log_info("upgrade: new master (pid %d) of old master pid %d: %d worker socket(s) and the admin socket "
                "inherited",
                (int)getpid(), (int)getppid(), u->inherited_count);
    return 0;
}

static void format_addr(const struct sockaddr_storage *ss, char *buf, size_t size)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        port = ntohs(a->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        port = ntohs(a->sin6_port);
    }
    snprintf(buf, size, "%s:%d", host, port);
}

static int same_addr(const struct sockaddr_storage *ss, const struct addrinfo *ai)
{
    if (ss->ss_family != ai->ai_family)
        return 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss, *b = (const struct sockaddr_in *)ai->ai_addr;
        return a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss, *b = (const struct sockaddr_in6 *)ai->ai_addr;
    return a->sin6_port == b->sin6_port && memcmp(&a->sin6_addr, &b->sin6_addr, sizeof(a->sin6_addr)) == 0;
}

/* An inherited socket must listen on the address this master's flags name: an upgrade cannot move it. */
static int check_inherited(int fd, const char *flag, const char *host, int port, char *err, size_t err_size)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int listening = 0;
    socklen_t optlen = sizeof(listening);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0 ||
        getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &optlen) != 0 || !listening) {
        snprintf(err, err_size, "inherited descriptor %d is not a listening socket", fd);
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); /* as the master's own: accept must not block */
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res;
    char service[16];
    snprintf(service, sizeof(service), "%d", port);
    if (getaddrinfo(host, service, &hints, &res) != 0) {
        snprintf(err, err_size, "%s %s:%d does not resolve", flag, host, port);
        return -1;
    }
    int match = 0;
    for (struct addrinfo *ai = res; ai != NULL && !match; ai = ai->ai_next)
        match = same_addr(&ss, ai);
    freeaddrinfo(res);
    if (!match) {
        char have[INET6_ADDRSTRLEN + 8];
        format_addr(&ss, have, sizeof(have));
        snprintf(err, err_size,
                 "%s:%d: the old master's socket listens on %s instead (%s changed?); an upgrade keeps the "
                 "addresses: stop the server and start it to move them",
                 host, port, have, flag);
        return -1;
    }
    return 0;
}

int tr_upgrade_listener(tr_upgrade_t *u, int slot,
                        int (*open_listener)(const char *host, int port, int reuseport, int first, char *err,
                                             size_t err_size),
                        char *err, size_t err_size)
{
    const tr_config_t *cfg = u->cfg;
    if (slot < 0) {
        if (u->inherited_admin < 0)
            return open_listener(cfg->admin_host, cfg->admin_port, 0, 1, err, err_size);
        int fd = u->inherited_admin;
        u->inherited_admin = -1;
        if (check_inherited(fd, "--admin", cfg->admin_host, cfg->admin_port, err, err_size) != 0) {
            close(fd);
            return -1;
        }
        return fd;
    }
    if (slot >= u->inherited_count)
        /* More workers than the old master had: join the group the inherited sockets are in (the
         * "already served" probe would find our own group). */
        return open_listener(cfg->listen_host, cfg->listen_port, 1, u->inherited_count == 0 && slot == 0, err,
                             err_size);
    int fd = u->inherited_listen[slot];
    u->inherited_listen[slot] = -1;
    if (check_inherited(fd, "--listen", cfg->listen_host, cfg->listen_port, err, err_size) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

void tr_upgrade_drop_unused(tr_upgrade_t *u)
{
    for (int i = 0; i < u->inherited_count; i++) {
        if (u->inherited_listen[i] < 0)
            continue;
        /* Its queue is reset once the old master closes it too: said, since nothing can move it. */
        tr_log_error("upgrade: --workers is %d, the old master had %d: its socket for slot %d is closed here; "
                     "connections queued on it when the old master exits are reset",
                     u->cfg->workers, u->inherited_count, i);
        close(u->inherited_listen[i]);
        u->inherited_listen[i] = -1;
    }
}

/* ---- the store's write lock ---- */

tr_store_lock_t *tr_upgrade_store_lock(tr_upgrade_t *u, char *err, size_t err_size)
{
    if (u->lock_fd >= 0) {
        struct stat st;
        lock_page_t *page = MAP_FAILED;
        if (fstat(u->lock_fd, &st) == 0 && st.st_size == (off_t)sizeof(lock_page_t))
            page = mmap(NULL, sizeof(lock_page_t), PROT_READ | PROT_WRITE, MAP_SHARED, u->lock_fd, 0);
        if (page != MAP_FAILED && page->magic == LOCK_MAGIC && page->size == sizeof(lock_page_t))
            return &page->lock;
        if (page != MAP_FAILED)
            munmap(page, sizeof(lock_page_t));
        tr_log_error("upgrade: the old master's store lock has another layout; until it exits, the writers of "
                     "the two masters wait for each other through SQLite's busy timeout only");
        close(u->lock_fd);
        u->lock_fd = -1;
    }
    u->lock_fd = memfd_create("triage-store-lock", MFD_CLOEXEC);
    lock_page_t *page = MAP_FAILED;
    if (u->lock_fd >= 0 && ftruncate(u->lock_fd, sizeof(lock_page_t)) == 0)
        page = mmap(NULL, sizeof(lock_page_t), PROT_READ | PROT_WRITE, MAP_SHARED, u->lock_fd, 0);
    if (page == MAP_FAILED) {
        snprintf(err, err_size, "the store lock's shared memory: %s", strerror(errno));
        return NULL;
    }
    memset(page, 0, sizeof(*page));
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&page->lock.mutex, &attr);
    pthread_mutexattr_destroy(&attr);
    page->magic = LOCK_MAGIC;
    page->size = sizeof(lock_page_t);
    return &page->lock;
}

/* ---- serving: the pid file, systemd, and the old master ---- */

/* sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET (an abstract address when it starts
 * with '@'). Nothing to do outside systemd's Type=notify. */
static void notify_systemd(const char *msg)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (path == NULL || (path[0] != '/' && path[0] != '@'))
        return;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len >= sizeof(addr.sun_path))
        return;
    memcpy(addr.sun_path, path, len);
    if (addr.sun_path[0] == '@')
        addr.sun_path[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&addr,
               (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0)
        tr_log_error("cannot notify systemd at %s: %s", path, strerror(errno));
    close(fd);
}

static void on_ready_poll(struct ev_loop *loop, ev_timer *t, int revents)
{
    tr_upgrade_t *u = t->data;
    (void)revents;
    int serving = 0;
    for (int i = 0; i < u->cfg->workers; i++) {
        const tr_slot_t *slot = &u->workers->slots[i];
        if (u->notify_fd >= 0 && slot->quick_exits >= QUICK_EXITS_GIVE_UP) {
            ev_timer_stop(loop, t);
            tr_log_error("upgrade failed: worker %d of the new master exits at start (see above); the new master "
                         "(pid %d) stops and the old one (pid %d) keeps serving",
                         i, (int)getpid(), (int)getppid());
            close(u->notify_fd);
            u->notify_fd = -1;
            u->failed(u->data);
            return;
        }
        /* A worker publishes its pid once its application has loaded, just before it serves. */
        serving += slot->pid != 0 && u->shared->workers[i].pid == slot->pid;
    }
    if (serving < u->cfg->workers)
        return;
    ev_timer_stop(loop, t);
    write_pid_file(u->cfg);
    char msg[64];
    snprintf(msg, sizeof(msg), "READY=1\nMAINPID=%d", (int)getpid());
    notify_systemd(msg); /* after an upgrade, systemd follows the new master (NotifyAccess=all) */
    if (u->notify_fd < 0)
        return;
    pid_t old = getppid();
    if (write(u->notify_fd, "R", 1) != 1)
        tr_log_error("upgrade: cannot tell the old master (pid %d) that this one serves: %s", (int)old,
                     strerror(errno));
    else
        tr_log_info("upgrade: the new master (pid %d) serves with %d workers; the old master (pid %d) drains now",
                    (int)getpid(), u->cfg->workers, (int)old);
    close(u->notify_fd);
    u->notify_fd = -1;
}

void tr_upgrade_started(tr_upgrade_t *u, const tr_supervisor_t *workers, const tr_shared_t *shared,
                        void (*replaced)(void *data), void (*failed)(void *data), void *data)
{
    u->workers = workers;
    u->shared = shared;
    u->replaced = replaced;
    u->failed = failed;
    u->data = data;
    ev_timer_init(&u->ready_poll, on_ready_poll, 0.05, 0.05);
    u->ready_poll.data = u;
    ev_timer_start(u->loop, &u->ready_poll);
}

/* ---- the old master: start a new one, wait for it ---- */

static void reply(tr_upgrade_t *u, int value)
{
    if (u->requester > 0) {
        union sigval v = {.sival_int = value};
        if (sigqueue(u->requester, SIGUSR1, v) != 0)
            tr_log_error("upgrade: cannot tell `triage upgrade` (pid %d) the outcome: %s (run it as this master's "
                         "user)",
                         (int)u->requester, strerror(errno));
    }
    u->requester = 0;
}

/* The attempt is over (either way): stop watching the new master. */
static void forget_child(tr_upgrade_t *u)
{
    if (u->ready_fd >= 0) {
        ev_io_stop(u->loop, &u->ready_io);
        close(u->ready_fd);
        u->ready_fd = -1;
    }
    ev_timer_stop(u->loop, &u->ready_timeout);
    u->child = 0;
}

static void on_ready(struct ev_loop *loop, ev_io *io, int revents)
{
    tr_upgrade_t *u = io->data;
    char c;
    (void)revents;
    ssize_t n = read(u->ready_fd, &c, 1);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n != 1 || c != 'R') {
        /* It gave up or died: its exit, reaped next, says how. */
        ev_io_stop(loop, io);
        return;
    }
    pid_t child = u->child;
    tr_log_info("upgrade: the new master (pid %d) serves; this master (pid %d) stops accepting and drains", (int)child,
                (int)getpid());
    reply(u, (int)child);
    forget_child(u);
    u->replaced(u->data);
}

static void on_ready_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    tr_upgrade_t *u = t->data;
    (void)loop, (void)revents;
    tr_log_error("upgrade: the new master (pid %d) does not serve after %.0f s; stopping it, this master keeps "
                 "serving",
                 (int)u->child, TR_UPGRADE_READY_SECONDS);
    kill(u->child, SIGTERM); /* its exit is reaped as a failed upgrade */
}

static void clear_cloexec(int fd)
{
    if (fd >= 0)
        fcntl(fd, F_SETFD, 0);
}

void tr_upgrade_begin(tr_upgrade_t *u, pid_t requester, const int *listen_fds, int admin_fd, const char *env_token)
{
    const char *refused = u->child > 0    ? "another upgrade is under way"
                          : u->stopped    ? "this master is stopping"
                          : getpid() == 1 ? "this master is process 1 (a container's init): its exit would end the "
                                            "container; replace the container instead"
                          : u->notify_fd >= 0 || ev_is_active(&u->ready_poll) ? "this master does not serve yet"
                                                                              : NULL;
    if (refused != NULL) {
        tr_log_error("upgrade refused: %s", refused);
        if (requester > 0) {
            union sigval v = {.sival_int = -1};
            sigqueue(requester, SIGUSR1, v);
        }
        return;
    }
    u->requester = requester;
    int pipefd[2];
    if (exe_path[0] == '\0' || pipe2(pipefd, O_CLOEXEC | O_NONBLOCK) != 0) {
        tr_log_error("upgrade failed: %s; this master keeps serving",
                     exe_path[0] ? strerror(errno) : "the path of the binary is unknown");
        reply(u, -1);
        return;
    }
    char env[64 + TR_MAX_WORKERS * 12];
    int n = snprintf(env, sizeof(env), "listen=");
    for (int i = 0; i < u->cfg->workers; i++)
        n += snprintf(env + n, sizeof(env) - (size_t)n, "%s%d", i ? "," : "", listen_fds[i]);
    n += snprintf(env + n, sizeof(env) - (size_t)n, " admin=%d ready=%d", admin_fd, pipefd[1]);
    if (u->lock_fd >= 0)
        snprintf(env + n, sizeof(env) - (size_t)n, " lock=%d", u->lock_fd);
    tr_log_info("upgrade: starting %s as the new master", exe_path);
    pid_t pid = fork();
    if (pid < 0) {
        tr_log_error("upgrade failed: fork: %s; this master keeps serving", strerror(errno));
        close(pipefd[0]);
        close(pipefd[1]);
        reply(u, -1);
        return;
    }
    if (pid == 0) {
        /* The new master starts with clean signal state (the master blocks its signals for its signalfd). */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        for (int i = 0; i < u->cfg->workers; i++)
            clear_cloexec(listen_fds[i]);
        clear_cloexec(admin_fd);
        clear_cloexec(u->lock_fd);
        clear_cloexec(pipefd[1]);
        setenv(TR_UPGRADE_ENV, env, 1);
        if (env_token != NULL)
            setenv(TR_ADMIN_TOKEN_ENV, env_token, 1);
        execv(exe_path, saved_argv);
        tr_log_error("upgrade failed: cannot run %s: %s", exe_path, strerror(errno));
        _exit(127);
    }
    close(pipefd[1]);
    u->child = pid;
    u->ready_fd = pipefd[0];
    ev_io_init(&u->ready_io, on_ready, u->ready_fd, EV_READ);
    u->ready_io.data = u;
    ev_io_start(u->loop, &u->ready_io);
    ev_timer_init(&u->ready_timeout, on_ready_timeout, TR_UPGRADE_READY_SECONDS, 0.);
    u->ready_timeout.data = u;
    ev_timer_start(u->loop, &u->ready_timeout);
    tr_log_info("upgrade: new master pid %d; this master (pid %d) serves until all its workers do", (int)pid,
                (int)getpid());
}

int tr_upgrade_reap(tr_upgrade_t *u, pid_t pid, int status)
{
    if (u->child == 0 || pid != u->child)
        return 0;
    if (WIFSIGNALED(status))
        tr_log_error("upgrade failed: the new master (pid %d) was killed by signal %d before serving; this master "
                     "(pid %d) keeps serving",
                     (int)pid, WTERMSIG(status), (int)getpid());
    else
        tr_log_error("upgrade failed: the new master (pid %d) exited with status %d before serving (its reason is "
                     "above, or on the server's standard error); this master (pid %d) keeps serving",
                     (int)pid, WEXITSTATUS(status), (int)getpid());
    reply(u, -1);
    forget_child(u);
    return 1;
}

void tr_upgrade_stop(tr_upgrade_t *u)
{
    u->stopped = 1;
    if (ev_is_active(&u->ready_poll))
        ev_timer_stop(u->loop, &u->ready_poll);
    if (u->child > 0) {
        tr_log_info("upgrade: stopping the new master (pid %d) too: it does not serve yet", (int)u->child);
        kill(u->child, SIGTERM);
        reply(u, -1);
        forget_child(u);
    }
}

void tr_upgrade_close_fds(tr_upgrade_t *u)
{
    if (u->ready_fd >= 0)
        close(u->ready_fd);
    if (u->notify_fd >= 0)
        close(u->notify_fd);
    if (u->lock_fd >= 0)
        close(u->lock_fd);
}

/* ---- `triage upgrade` ---- */

int tr_upgrade_command(int argc, char **argv)
{
    const char *data = "data";
    double timeout = TR_UPGRADE_READY_SECONDS + 5;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--data") == 0 && i + 1 < argc)
            data = argv[++i];
        else if (strncmp(argv[i], "--data=", 7) == 0)
            data = argv[i] + 7;
        else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc && (timeout = atof(argv[++i])) > 0)
            continue;
        else {
            fprintf(stderr, "usage: triage upgrade [--data DIR] [--timeout SECONDS]\n"
                            "  (signals the master named in DIR/" TR_PID_FILE " and waits for the outcome)\n");
            return 2;
        }
    }
    char dir[PATH_MAX], path[PATH_MAX + 32];
    if (tr_config_data_dir(data, dir, sizeof(dir)) != 0) {
        fprintf(stderr, "triage upgrade: --data %s: path too long\n", data);
        return 2;
    }
    snprintf(path, sizeof(path), "%s/" TR_PID_FILE, dir);
    pid_t pid = read_pid_file(path);
    if (pid <= 0 || kill(pid, 0) != 0) {
        fprintf(stderr, "triage upgrade: no running master named in %s (%s); is the server running with --data %s?\n",
                path, pid <= 0 ? "missing or unreadable" : strerror(errno), data);
        return 1;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, NULL);
    union sigval v = {.sival_int = TR_UPGRADE_ASK};
    if (sigqueue(pid, SIGUSR2, v) != 0) {
        fprintf(stderr, "triage upgrade: cannot signal pid %d: %s\n", (int)pid, strerror(errno));
        return 1;
    }
    struct timespec now, deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += (time_t)timeout;
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        double left = (double)(deadline.tv_sec - now.tv_sec) + (double)(deadline.tv_nsec - now.tv_nsec) / 1e9;
        if (left <= 0) {
            fprintf(stderr, "triage upgrade: no answer from the master (pid %d) within %.0f s; see its error log\n",
                    (int)pid, timeout);
            return 1;
        }
        struct timespec wait = {.tv_sec = (time_t)left, .tv_nsec = (long)((left - (double)(time_t)left) * 1e9)};
        siginfo_t si;
        if (sigtimedwait(&set, &si, &wait) != SIGUSR1 || si.si_pid != pid || si.si_code != SI_QUEUE)
            continue;
        if (si.si_value.sival_int > 0) {
            printf("upgraded: the new master is pid %d; the old one (pid %d) drains and exits\n", si.si_value.sival_int,
                   (int)pid);
            return 0;
        }
        fprintf(stderr,
                "triage upgrade: the new master did not start; the master (pid %d) keeps serving; its error "
                "log says why\n",
                (int)pid);
        return 1;
    }
}
