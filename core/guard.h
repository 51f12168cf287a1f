/*
 * The worker's half of the watchdog: what it does when a handler keeps its Lua code running past
 * --handler-timeout (the master's half, which notices and escalates, is watchdog.h).
 *
 * While a worker runs Lua it publishes the number of that run in its stats slot (lua_running). The
 * master sends TR_GUARD_SIGNAL to the worker's main thread when it has seen the same run going for
 * the budget, and again a moment later if it is still going:
 *
 * 1. The first signal sets a count hook. Code LuaJIT interprets reaches the hook within a few thousand
 *    instructions: the hook raises an error in the request, which is answered 503 (the request
 *    function asks tr_ffi_req_stopped); the worker goes on serving.
 * 2. Code running in a compiled trace never reaches a hook (Debian's LuaJIT has no check-hook build),
 *    so at the second signal the worker gives up on itself, from the signal handler: every client
 *    waiting for an answer gets a 503 with Connection: close (the stuck request's names its budget),
 *    connections between requests are handed to the slot's next worker (tr_conn_abandon), what the
 *    handler was doing is left in the stats slot for the master's log, and the worker exits with
 *    TR_GUARD_EXIT. Its listening socket stays open in the master, so
 *    connections waiting to be accepted are served by the replacement. Writes that were committed but
 *    not yet acknowledged are safe to retry (idempotent intake); nothing unacknowledged is reported
 *    as done.
 */
#ifndef TR_GUARD_H
#define TR_GUARD_H

#include <stdint.h>

#include "conn.h"
#include "shared.h"

#define TR_GUARD_EXIT 86 /* a worker's exit status after step 2 */

/* The signal the master sends (a real-time signal: queued, never merged with the worker's others). */
int tr_guard_signal(void);

/* Install the signal handler in a worker. handoff_fd: where connections between requests go when the
 * worker gives up (see tr_conn_abandon). budget is --handler-timeout, for messages. */
void tr_guard_init(tr_stats_t *stats, tr_conn_server_t *conns, int handoff_fd, double budget);

#endif
