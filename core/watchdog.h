/*
 * The master's half of the watchdog (the worker's is guard.h): handlers that keep a worker's Lua code
 * running past --handler-timeout, and routes whose handlers keep doing it.
 *
 * Ten times a second the master reads each worker's lua_running (the number of the Lua run in
 * progress, 0 between runs). A run seen unchanged for the budget gets the worker TR_GUARD_SIGNAL (its
 * hook stops interpreted code); one still unchanged a second later gets it again (the worker answers
 * its clients and exits: compiled code cannot be interrupted); a worker that has not exited two
 * seconds after that is killed. The supervisor replaces it either way.
 *
 * Each stop is a strike against its route on its generation. A route struck COOLDOWN_STRIKES times
 * within COOLDOWN_WINDOW seconds is paused for COOLDOWN_SECONDS: the workers answer it 503 with
 * Retry-After without running it (shared.h, tr_cooldown_t), instead of losing worker after worker to
 * requests queued for it. A reload (a new generation) serves the route again at once.
 */
#ifndef TR_WATCHDOG_H
#define TR_WATCHDOG_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

#include "shared.h"
#include "supervise.h"

#define COOLDOWN_STRIKES 2
#define COOLDOWN_WINDOW 300.0
#define COOLDOWN_SECONDS 60.0

typedef struct tr_watch_slot_s {
    pid_t pid;
    uint64_t run; /* the run being timed (0: none) */
    double since; /* when the master first saw it (monotonic) */
    int stage;    /* 0 timing, 1 hook set, 2 asked to give up, 3 killed */
    double stage_at;
    uint64_t timeouts_seen; /* the slot's handler_timeouts, counted as strikes */
} tr_watch_slot_t;

typedef struct tr_strike_s {
    uint64_t generation; /* 0: free */
    char route[TR_ROUTE_LABEL_MAX];
    double at[COOLDOWN_STRIKES]; /* the latest strikes (monotonic), newest first */
} tr_strike_t;

typedef struct tr_watchdog_s {
    struct ev_loop *loop;
    tr_shared_t *shared;
    tr_supervisor_t *workers;
    int nworkers;
    double budget;
    ev_timer tick;
    tr_watch_slot_t slots[TR_MAX_WORKERS];
    tr_strike_t strikes[32];
} tr_watchdog_t;

/* Start watching the supervisor's workers with budget (seconds; --handler-timeout). */
void tr_watchdog_start(tr_watchdog_t *wd, struct ev_loop *loop, tr_shared_t *shared, tr_supervisor_t *workers,
                       double budget);

void tr_watchdog_stop(tr_watchdog_t *wd);

/*
 * Workers not serving generation yet, as JSON array elements at out ("{\"worker\":0,\"pid\":12,
 * \"generation\":3,\"why\":\"...\"}", comma-separated; "" when every live worker serves it).
 * Returns how many.
 */
int tr_watchdog_behind(const tr_watchdog_t *wd, uint64_t generation, char *out, size_t size);

#endif
