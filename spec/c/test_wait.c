/*
 * core/wait.c: parked waiters leave by their deadline or by a wake, in order, each resumed exactly
 * once, from the loop; a wake is never run inside the waker.
 */
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "wait.h"

#define N 200

typedef struct probe_s {
    tr_waiter_t w;
    int resumed; /* times resumed */
    int status;
    int order; /* position among all resumptions */
    double at; /* the deadline it was parked with */
} probe_t;

static int resumptions;
static int in_waker; /* set while a test is inside tr_wait_wake's caller */

static void on_resume(tr_waiter_t *w, int status)
{
    probe_t *p = (probe_t *)w;
    ASSERT(!in_waker);
    p->resumed++;
    p->status = status;
    p->order = resumptions++;
}

static void init(struct ev_loop **loop, tr_waits_t *ws, probe_t *probes, int n)
{
    *loop = ev_loop_new(EVFLAG_AUTO);
    ASSERT_NOT_NULL(*loop);
    ASSERT_INT_EQ(tr_waits_init(ws, *loop), 0);
    memset(probes, 0, sizeof(*probes) * (size_t)n);
    for (int i = 0; i < n; i++)
        probes[i].w.resume = on_resume;
    resumptions = 0;
}

static void done(struct ev_loop *loop, tr_waits_t *ws)
{
    tr_waits_close(ws);
    ev_loop_destroy(loop);
}

/* Deadlines in any order come out in deadline order, each with TR_WAIT_EXPIRED, from the loop. */
TEST_IMPL(wait_deadlines_in_order)
{
    struct ev_loop *loop;
    tr_waits_t ws;
    static probe_t p[N];
    init(&loop, &ws, p, N);
    double now = tr_wait_clock();
    srand(7);
    for (int i = 0; i < N; i++) {
        p[i].at = now + 0.001 * (rand() % 50);
        tr_wait_park(&ws, &p[i].w, p[i].at);
    }
    for (int i = 0; i < N; i++)
        ASSERT_INT_EQ(p[i].resumed, 0); /* nothing runs until the loop does */
    while (resumptions < N)
        ev_run(loop, EVRUN_ONCE);
    for (int i = 0; i < N; i++) {
        ASSERT_INT_EQ(p[i].resumed, 1);
        ASSERT_INT_EQ(p[i].status, TR_WAIT_EXPIRED);
        ASSERT(!p[i].w.parked);
        for (int j = 0; j < N; j++)
            if (p[i].order < p[j].order)
                ASSERT(p[i].at <= p[j].at);
    }
    done(loop, &ws);
}

/* A wake takes a waiter out of the deadline heap (any position) and resumes it before the loop next
 * blocks, with the waker's status; the others keep their deadlines. */
TEST_IMPL(wait_wake_before_deadline)
{
    struct ev_loop *loop;
    tr_waits_t ws;
    static probe_t p[N];
    init(&loop, &ws, p, N);
    double now = tr_wait_clock();
    for (int i = 0; i < N; i++)
        tr_wait_park(&ws, &p[i].w, i % 3 == 0 ? -1 : now + 0.02 + 0.0001 * ((i * 37) % N));
    in_waker = 1;
    for (int i = 0; i < N; i += 2)
        ASSERT_INT_EQ(tr_wait_wake(&ws, &p[i].w, i), 0);
    ASSERT_INT_EQ(tr_wait_wake(&ws, &p[0].w, 99), -1); /* already woken */
    in_waker = 0;
    ev_run(loop, EVRUN_NOWAIT);
    for (int i = 0; i < N; i += 2) {
        ASSERT_INT_EQ(p[i].resumed, 1);
        ASSERT_INT_EQ(p[i].status, i);
    }
    /* Woken ones come back in the order they were woken. */
    for (int i = 2; i < N; i += 2)
        ASSERT(p[i - 2].order < p[i].order);
    /* Odd ones with a deadline expire; those without one stay parked until woken. */
    double deadline = tr_wait_clock() + 5;
    while (tr_wait_clock() < deadline) {
        int pending = 0;
        for (int i = 1; i < N; i += 2)
            pending += i % 3 != 0 && p[i].resumed == 0;
        if (pending == 0)
            break;
        ev_run(loop, EVRUN_ONCE);
    }
    for (int i = 1; i < N; i += 2) {
        if (i % 3 == 0) {
            ASSERT_INT_EQ(p[i].resumed, 0);
            ASSERT(p[i].w.parked);
            ASSERT_INT_EQ(tr_wait_wake(&ws, &p[i].w, -5), 0);
        } else {
            ASSERT_INT_EQ(p[i].resumed, 1);
            ASSERT_INT_EQ(p[i].status, TR_WAIT_EXPIRED);
        }
    }
    ev_run(loop, EVRUN_NOWAIT);
    for (int i = 0; i < N; i++)
        ASSERT_INT_EQ(p[i].resumed, 1);
    done(loop, &ws);
}

/* A cancelled waiter is never resumed, whether it was parked, timed or already woken. */
TEST_IMPL(wait_cancel)
{
    struct ev_loop *loop;
    tr_waits_t ws;
    static probe_t p[4];
    init(&loop, &ws, p, 4);
    double now = tr_wait_clock();
    tr_wait_park(&ws, &p[0].w, now + 0.001);
    tr_wait_park(&ws, &p[1].w, -1);
    tr_wait_park(&ws, &p[2].w, now + 0.001);
    tr_wait_park(&ws, &p[3].w, now + 0.002);
    ASSERT_INT_EQ(tr_wait_wake(&ws, &p[2].w, 1), 0);
    tr_wait_cancel(&ws, &p[0].w);
    tr_wait_cancel(&ws, &p[1].w);
    tr_wait_cancel(&ws, &p[2].w);
    ASSERT_INT_EQ(tr_wait_wake(&ws, &p[1].w, 1), -1);
    while (p[3].resumed == 0)
        ev_run(loop, EVRUN_ONCE);
    ev_run(loop, EVRUN_NOWAIT);
    ASSERT_INT_EQ(p[0].resumed + p[1].resumed + p[2].resumed, 0);
    ASSERT_INT_EQ(p[3].resumed, 1);
    done(loop, &ws);
}

/* A resumed owner may park again at once (a request that sleeps twice): it is resumed again later,
 * not in the same pass. */
static tr_waits_t *again_ws;
static void resume_and_park_again(tr_waiter_t *w, int status)
{
    probe_t *p = (probe_t *)w;
    p->resumed++;
    p->status = status;
    if (p->resumed < 3)
        tr_wait_park(again_ws, w, tr_wait_clock());
}

TEST_IMPL(wait_park_again_from_resume)
{
    struct ev_loop *loop;
    tr_waits_t ws;
    static probe_t p[1];
    init(&loop, &ws, p, 1);
    again_ws = &ws;
    p[0].w.resume = resume_and_park_again;
    tr_wait_park(&ws, &p[0].w, tr_wait_clock());
    ev_run(loop, EVRUN_NOWAIT); /* the timerfd may not be readable yet: turn until it was */
    while (p[0].resumed == 0)
        ev_run(loop, EVRUN_ONCE);
    ASSERT_INT_EQ(p[0].resumed, 1); /* parked again, not resumed twice in one pass */
    while (p[0].resumed < 3)
        ev_run(loop, EVRUN_ONCE);
    ASSERT_INT_EQ(p[0].resumed, 3);
    ASSERT(!p[0].w.parked);
    done(loop, &ws);
}
