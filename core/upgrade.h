/*
 * Binary upgrade without refusing a connection, and the pid file (both run in the master).
 *
 * SIGUSR2 (or `triage upgrade`, which sends it) makes the running master fork and exec the binary at
 * the path it was started from, as resolved at start (so a file replaced there since is the one that
 * runs), with the same arguments. The new master inherits the listening sockets (the workers'
 * SO_REUSEPORT group and the admin socket), the store's write lock and a readiness pipe, through
 * TRIAGE_UPGRADE in its environment. It uses those sockets instead of binding (after checking they
 * are the addresses its flags name), starts its workers, and once every worker serves, writes the pid
 * file and tells the old master through the pipe. The old master then drains as on SIGTERM and exits
 * 0. The sockets are the same kernel objects all along: connections queued on them wait for whichever
 * worker accepts next, so none is refused or reset. If the new master exits, fails to start its
 * workers or is not ready in time, the old one keeps serving and logs why.
 *
 * The store's write lock (shared.h) lives in a memfd mapping of its own that the new master maps too:
 * the writers of both masters take turns on one lock during the overlap, as the workers of one master
 * do. (A lock of another layout is refused; SQLite's busy timeout then serializes the two masters.)
 */
#ifndef TR_UPGRADE_H
#define TR_UPGRADE_H

#include <ev.h>
#include <sys/types.h>

#include "config.h"
#include "shared.h"
#include "supervise.h"

#define TR_PID_FILE "triage.pid"        /* in the data directory, while a master serves */
#define TR_UPGRADE_ENV "TRIAGE_UPGRADE" /* what a new master inherits: see upgrade.c */
#define TR_UPGRADE_READY_SECONDS 60.0   /* a new master not serving by then is stopped */
#define TR_UPGRADE_ASK 0x7472755a       /* sigqueue value of `triage upgrade`: reply to the sender */

typedef struct tr_upgrade_s {
    struct ev_loop *loop;
    const tr_config_t *cfg;
    /* What this master received from the one it replaces (TR_UPGRADE_ENV); -1 / 0 when started anew. */
    int inherited_listen[TR_MAX_WORKERS];
    int inherited_count;
    int inherited_admin;
    int lock_fd;   /* the store lock's memfd (this master's, or inherited) */
    int notify_fd; /* write end of the old master's readiness pipe, until ready */
    ev_timer ready_poll;
    const tr_supervisor_t *workers;
    const tr_shared_t *shared;
    /* The other side: a new master this one started. */
    pid_t child;
    pid_t requester; /* `triage upgrade` waiting for the outcome; 0: none */
    int ready_fd;    /* read end of the readiness pipe */
    ev_io ready_io;
    ev_timer ready_timeout;
    /* Called once the new master serves (this master should drain now), or once this master,
     * started by an upgrade, finds it cannot start its workers (it should stop). */
    void (*replaced)(void *data);
    void (*failed)(void *data);
    void *data;
    int stopped;
} tr_upgrade_t;

/* In main, before anything else: remember the binary's path (argv[0] made absolute, or found in PATH,
 * without following symlinks) and the arguments, for the exec of an upgrade. argv must live as long as
 * the process (main's does). */
void tr_upgrade_remember(int argc, char **argv);

/*
 * Set up u in a master at start; reads and clears TR_UPGRADE_ENV. Returns 0, or -1 with a message in
 * err (a malformed inheritance: the new master refuses to start, the old keeps serving).
 */
int tr_upgrade_init(tr_upgrade_t *u, struct ev_loop *loop, const tr_config_t *cfg, char *err, size_t err_size);

/*
 * The listening socket for worker slot i (inherited when there is one, checked against --listen;
 * else newly bound in the SO_REUSEPORT group) or for the admin listener (slot -1, checked against
 * --admin). Returns the descriptor (close-on-exec), or -1 with a message in err. open_listener is the
 * master's binder, called for a socket not inherited.
 */
int tr_upgrade_listener(tr_upgrade_t *u, int slot,
                        int (*open_listener)(const char *host, int port, int reuseport, int first, char *err,
                                             size_t err_size),
                        char *err, size_t err_size);

/* Close inherited sockets no slot uses (fewer --workers than the old master had); logs each. */
void tr_upgrade_drop_unused(tr_upgrade_t *u);

/* The store's write lock: the inherited one, or a new one in a memfd mapping. NULL with err. */
tr_store_lock_t *tr_upgrade_store_lock(tr_upgrade_t *u, char *err, size_t err_size);

/*
 * The master has started its workers. Once every worker serves, it writes the pid file, tells systemd
 * (READY=1 and MAINPID, when $NOTIFY_SOCKET is set) and, when started by an upgrade, the old master;
 * a master started by an upgrade calls failed instead when a worker keeps exiting at start.
 */
void tr_upgrade_started(tr_upgrade_t *u, const tr_supervisor_t *workers, const tr_shared_t *shared,
                        void (*replaced)(void *data), void (*failed)(void *data), void *data);

/* SIGUSR2: start a new master. requester: the pid of `triage upgrade` waiting for the outcome, or 0.
 * listen_fds: the workers' sockets (cfg->workers), admin_fd: the admin listener's. env_token: the
 * admin token when it came from $TRIAGE_ADMIN_TOKEN (which the master has wiped from its environment),
 * handed to the new master the same way; NULL otherwise. */
void tr_upgrade_begin(tr_upgrade_t *u, pid_t requester, const int *listen_fds, int admin_fd, const char *env_token);

/* A child exited: if it was the new master, log the failed upgrade and return 1; else 0. */
int tr_upgrade_reap(tr_upgrade_t *u, pid_t pid, int status);

/* The master stops: a new master still starting is stopped too (SIGTERM). */
void tr_upgrade_stop(tr_upgrade_t *u);

/* In a new worker: close the descriptors only the master uses. */
void tr_upgrade_close_fds(tr_upgrade_t *u);

/* At the master's exit: remove the pid file if it still names this process. */
void tr_upgrade_exit(tr_upgrade_t *u);

/* `triage upgrade [--data DIR] [--timeout SECONDS]`: signal the master named in DIR/triage.pid and
 * wait for the outcome. Returns the exit code: 0 upgraded, 1 failed (the old master serves), 2 usage. */
int tr_upgrade_command(int argc, char **argv);

#endif
