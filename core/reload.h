/*
 * Reloads (in the master): a new generation of the application's code goes live only after it has
 * been preflighted. The tree is snapshotted (snapshot.h), loaded in a scratch Lua state (compile,
 * load, build the routes) in a child process (the master itself never runs the application's code:
 * a script that loops or exhausts memory at load time costs a child, killed after the load budget),
 * and checked by the --reload-check command if there is one; only then is it
 * published (shared memory) for the workers, which each build it and swap it in. A failure anywhere
 * leaves the running generation as it is and is reported.
 *
 * Reloads never overlap: one asked for while a check runs starts when it ends.
 */
#ifndef TR_RELOAD_H
#define TR_RELOAD_H

#include <ev.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "pool.h"
#include "shared.h"

typedef struct tr_reloader_s tr_reloader_t;

typedef struct tr_reload_callbacks_s {
    /* A generation was published: tell the workers. */
    void (*published)(void *data, uint64_t generation);
    /* A reload ended, published (ok) or rejected (error says why, ok 0). */
    void (*finished)(void *data, int ok, uint64_t generation, const char *error);
} tr_reload_callbacks_t;

struct tr_reloader_s {
    struct ev_loop *loop;
    const tr_config_t *cfg;
    tr_shared_t *shared;
    tr_reload_callbacks_t cb;
    void *data;
    int stopping;
    int reloading;    /* a check command is running */
    int reload_again; /* asked for (or files changed) while it ran */
    uint64_t pending_generation;
    uint64_t pending_hash; /* of the snapshot being checked */
    pid_t preflight_pid;   /* the child loading the new generation (see preflight in reload.c) */
    int preflight_fd;
    ev_io preflight_io;
    ev_timer preflight_timeout;
    pid_t check_pid;
    int check_fd;
    ev_io check_io;
    ev_timer check_timeout;
    tr_bufpool_t bufs;
    tr_buf_t check_output;
    char pending_environment[TR_SCRIPT_ENV_MAX]; /* of the last preflight, published with it */
};

/*
 * Make the snapshot directory (under $TMPDIR) and preflight generation 1, which the workers load at
 * start. Returns the number of routes, or -1 with a message in err: a server whose application does
 * not load does not start.
 */
int tr_reload_init(tr_reloader_t *r, struct ev_loop *loop, const tr_config_t *cfg, tr_shared_t *shared,
                   const tr_reload_callbacks_t *cb, void *data, char *err, size_t err_size);

/* Reload now (or as soon as the running check ends). */
void tr_reload_start(tr_reloader_t *r);

/* A child has exited: if it was the check command, finish its reload and return 1; else 0. */
int tr_reload_reap(tr_reloader_t *r, pid_t pid, int status);

/* No more reloads: kill a running check. */
void tr_reload_stop(tr_reloader_t *r);

/* Remove every snapshot (the master is exiting). */
void tr_reload_cleanup(tr_reloader_t *r);

#endif
