/*
 * Supervision of the workers (in the master): one worker process per slot, each on its slot's
 * listening socket; a worker that exits is replaced at once, and one that keeps dying right after
 * it starts is retried with a growing delay (up to a second).
 */
#ifndef TR_SUPERVISE_H
#define TR_SUPERVISE_H

#include <ev.h>
#include <sys/types.h>

#include "config.h"
#include "shared.h"

typedef struct tr_slot_s {
    pid_t pid; /* 0: no worker */
    double started;
    int quick_exits; /* consecutive exits soon after starting */
    double respawn_at;
} tr_slot_t;

typedef struct tr_supervisor_s {
    struct ev_loop *loop;
    const tr_config_t *cfg;
    tr_shared_t *shared;
    const int *listen_fds; /* one per slot, owned by the master */
    int *handoff_fds;      /* two per slot: a datagram socket pair that outlives the slot's workers, on
                            * which one that gives up leaves its idle connections for the next (guard.h) */
    tr_slot_t *slots;
    ev_timer respawn_timer;
    int stopping;
    /* Called in a new worker process before it runs: close what only the master uses. */
    void (*in_worker)(void *data);
    void *data;
} tr_supervisor_t;

/* Set up s and start a worker in every slot. */
void tr_supervise_start(tr_supervisor_t *s, struct ev_loop *loop, const tr_config_t *cfg, tr_shared_t *shared,
                        const int *listen_fds, void (*in_worker)(void *data), void *data);

/* A child has exited: if it was a worker, replace it (unless stopping) and return 1; else 0. */
int tr_supervise_reap(tr_supervisor_t *s, pid_t pid, int status);

/* Send sig to every worker. */
void tr_supervise_signal(tr_supervisor_t *s, int sig);

/* Workers running now. */
int tr_supervise_alive(const tr_supervisor_t *s);

/* Replace no more workers, and ask those running to finish (SIGTERM). */
void tr_supervise_stop(tr_supervisor_t *s);

#endif
