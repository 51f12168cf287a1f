/*
 * The admin listener (in the master):
 *   GET  /_triage/health   200 {"status":"ok"} when every worker is up, else 503; never needs the token
 *   GET  /_triage/status   the status document (status.h)
 *   GET  /_triage/metrics  Prometheus text (metrics.h)
 *   POST /_triage/reload   answered when the reload has ended (published or rejected)
 *
 * The token (admin_token.h, sent as Authorization: Bearer) is required for anything that changes
 * state, on every address, and for every endpoint but health when the listener is not on loopback.
 * Without it the answer is 401, with a wrong one 403; nothing is done either way.
 *
 * Everything on it is non-blocking: a request is read as it arrives, its answer is written as the
 * client takes it; a connection that makes no progress for ADMIN_IDLE_TIMEOUT seconds, or has not
 * sent its request (or taken its answer) within ADMIN_REQUEST_DEADLINE, is closed, so that no admin
 * client can stall the loop that supervises the workers or hold its descriptors. Every descriptor is
 * close-on-exec, and forked workers close them (tr_admin_close_fds).
 */
#ifndef TR_ADMIN_H
#define TR_ADMIN_H

#include <ev.h>
#include <stdint.h>

#include "pool.h"
#include "shared.h"

#define ADMIN_IDLE_TIMEOUT 10.0
#define ADMIN_REQUEST_DEADLINE 30.0 /* to send a whole request, and again to take its whole answer */

struct tr_metrics_s;

/* How the admin API guards itself and what it reports. */
typedef struct tr_admin_options_s {
    const char *token;                  /* the admin token (admin_token.h); must not be NULL */
    int loopback;                       /* the listener is loopback-only: status and metrics need no token */
    const struct tr_metrics_s *metrics; /* per-route counters for /_triage/metrics; may be NULL */
} tr_admin_options_t;

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
    tr_admin_options_t opt;
    int accept_paused; /* out of descriptors: said once in the error log until an accept succeeds */
    /* A reload was asked for: start one; its end comes back through tr_admin_reload_finished. */
    void (*on_reload)(void *data);
    void *data;
} tr_admin_t;

/* Serve the admin API on fd (a listening, non-blocking, close-on-exec socket that a now owns). opt
 * (and the token it points to) must outlive a. */
void tr_admin_start(tr_admin_t *a, struct ev_loop *loop, int fd, const tr_shared_t *shared, int nworkers,
                    double started_at, const tr_admin_options_t *opt, void (*on_reload)(void *data), void *data);

/* A reload has ended: answer every client waiting for one. behind (NULL: none) lists, as JSON array
 * elements, the workers not serving the published generation (see tr_watchdog_behind). */
void tr_admin_reload_finished(tr_admin_t *a, int ok, uint64_t generation, const char *error, const char *behind);

/* Close the listener and every admin connection. */
void tr_admin_stop(tr_admin_t *a);

/* In a forked worker: close the master's admin descriptors and wipe the requests read on them (a
 * token may be in one), touching nothing else. */
void tr_admin_close_fds(tr_admin_t *a);

#endif
