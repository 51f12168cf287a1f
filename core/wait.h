/*
 * Waiting and resuming: the one mechanism by which something that is running (a request's
 * coroutine) stops until an event arrives, and is then resumed.
 *
 * A waiter is embedded in whatever waits (a request) and parked here: with a deadline (a sleep,
 * or a wait that gives up), without one (a store commit), or both. It leaves the set in exactly one
 * of two ways, and both end in the same place, its resume callback:
 *   - its deadline passes: resume(waiter, TR_WAIT_EXPIRED), called from the loop's timer;
 *   - someone wakes it with tr_wait_wake(waiter, status): resume(waiter, status) is called later
 *     from the loop (never from inside tr_wait_wake), so a waker may itself be running Lua.
 * Deadlines share one timerfd that wakes the loop at the exact time (libev's own timers round
 * epoll's timeout up to whole milliseconds, which a 50 ms sleep at 1,000 connections would feel).
 *
 * Nothing here allocates on the request path once the heap has grown to the number of waiters.
 */
#ifndef TR_WAIT_H
#define TR_WAIT_H

#include <ev.h>

typedef struct tr_waiter_s tr_waiter_t;
typedef struct tr_waits_s tr_waits_t;

/* Status given to resume when a waiter's deadline passed. Wakers pass their own statuses (>= 0, or
 * negative errnos); TR_WAIT_EXPIRED is distinct from all of them. */
#define TR_WAIT_EXPIRED (-100000)

/* Called once per park, from the loop, after the waiter has left the set (it may park again). */
typedef void (*tr_wait_resume_cb)(tr_waiter_t *waiter, int status);

struct tr_waiter_s {
    tr_wait_resume_cb resume; /* set by the owner before parking */
    /* Owned by the waits set while parked. */
    double deadline;     /* CLOCK_MONOTONIC seconds; < 0: none */
    unsigned heap_index; /* in the deadline heap, when it has a deadline */
    int status;          /* the status a wake delivers */
    tr_waiter_t *next_ready;
    unsigned parked : 1;
    unsigned ready : 1; /* woken, resume pending */
};

struct tr_waits_s {
    struct ev_loop *loop;
    int timer_fd;
    ev_io timer_io;
    ev_prepare ready_watcher; /* runs the woken waiters before the loop next blocks */
    tr_waiter_t **heap;       /* min-heap on deadline */
    unsigned nheap, heap_cap;
    tr_waiter_t *ready_head, *ready_tail;
};

/* Seconds on CLOCK_MONOTONIC, the clock deadlines use. */
double tr_wait_clock(void);

/* Set up ws on loop. Returns 0 or -errno (the timerfd could not be made). */
int tr_waits_init(tr_waits_t *ws, struct ev_loop *loop);
/* Stop ws's watchers and free what it holds. Waiters still parked are forgotten, not resumed. */
void tr_waits_close(tr_waits_t *ws);

/* Park w (not parked now) until tr_wait_wake, or until deadline (tr_wait_clock() seconds; < 0 for
 * none), whichever comes first. */
void tr_wait_park(tr_waits_t *ws, tr_waiter_t *w, double deadline);

/* Resume a parked waiter with status, from the loop, before it next blocks. Waking a waiter that is
 * not parked, or already woken, does nothing and returns -1; otherwise 0. */
int tr_wait_wake(tr_waits_t *ws, tr_waiter_t *w, int status);

/* Take w out of the set without resuming it (its owner is going away). */
void tr_wait_cancel(tr_waits_t *ws, tr_waiter_t *w);

#endif
