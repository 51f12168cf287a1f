/*
 * The admin listener (in the master): GET /_triage/status and POST /_triage/reload.
 *
 * Everything on it is non-blocking: a request is read as it arrives, its answer is written as the
 * client takes it, and a connection that does neither within ADMIN_IDLE_TIMEOUT seconds is closed,
 * so that no admin client can stall the loop that supervises the workers. A reload request is
 * answered when the reload has ended (published or rejected).
 */
#ifndef TR_ADMIN_H
#define TR_ADMIN_H

#include <ev.h>
#include <stdint.h>

#include "pool.h"
#include "shared.h"

#define ADMIN_IDLE_TIMEOUT 10.0

typedef struct tr_admin_conn_s tr_admin_conn_t;

typedef struct tr_admin_s {
    struct ev_loop *loop;
    int fd; /* the listening socket, -1 once stopped */
    ev_io io;
    ev_timer accept_retry; /* accepting paused: out of descriptors */
    const tr_shared_t *shared;
    int nworkers;
    double started_at;
    tr_bufpool_t bufs;
    tr_admin_conn_t *conns; /* every open admin connection */
    /* A reload was asked for: start one; its end comes back through tr_admin_reload_finished. */
    void (*on_reload)(void *data);
    void *data;
} tr_admin_t;

/* Serve the admin API on fd (a listening, non-blocking socket that a now owns). */
void tr_admin_start(tr_admin_t *a, struct ev_loop *loop, int fd, const tr_shared_t *shared, int nworkers,
                    double started_at, void (*on_reload)(void *data), void *data);

/* A reload has ended: answer every client waiting for one. behind (NULL: none) lists, as JSON array
 * elements, the workers not serving the published generation (see tr_watchdog_behind). */
void tr_admin_reload_finished(tr_admin_t *a, int ok, uint64_t generation, const char *error, const char *behind);

/* Close the listener and every admin connection. */
void tr_admin_stop(tr_admin_t *a);

/* In a forked worker: close the master's admin descriptors, touching nothing else. */
void tr_admin_close_fds(tr_admin_t *a);

#endif
