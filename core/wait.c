/*
 * Parked waiters: a deadline min-heap behind one timerfd, and a queue of woken waiters run before
 * the loop next blocks. Both end in run_ready(), the only place a waiter is resumed.
 */
#include "wait.h"

#include <errno.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "pool.h"

double tr_wait_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- the deadline heap ---- */

static void heap_set(tr_waits_t *ws, unsigned i, tr_waiter_t *w)
{
    ws->heap[i] = w;
    w->heap_index = i;
}

static void sift_up(tr_waits_t *ws, unsigned i)
{
    tr_waiter_t *w = ws->heap[i];
    while (i > 0 && ws->heap[(i - 1) / 2]->deadline > w->deadline) {
        heap_set(ws, i, ws->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    heap_set(ws, i, w);
}

static void sift_down(tr_waits_t *ws, unsigned i)
{
    tr_waiter_t *w = ws->heap[i];
    unsigned n = ws->nheap;
    for (;;) {
        unsigned c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && ws->heap[c + 1]->deadline < ws->heap[c]->deadline)
            c++;
        if (w->deadline <= ws->heap[c]->deadline)
            break;
        heap_set(ws, i, ws->heap[c]);
        i = c;
    }
    heap_set(ws, i, w);
}

/* Point the timerfd at the earliest deadline (disarm it when there is none). */
static void arm(tr_waits_t *ws)
{
    struct itimerspec its;
    memset(&its, 0, sizeof(its)); /* all zero: disarmed */
    if (ws->nheap > 0) {
        double at = ws->heap[0]->deadline;
        its.it_value.tv_sec = (time_t)at;
        its.it_value.tv_nsec = (long)((at - (double)(time_t)at) * 1e9);
        if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
            its.it_value.tv_nsec = 1;
    }
    timerfd_settime(ws->timer_fd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void heap_push(tr_waits_t *ws, tr_waiter_t *w)
{
    if (ws->nheap == ws->heap_cap) {
        ws->heap_cap = ws->heap_cap ? ws->heap_cap * 2 : 256;
        ws->heap = tr_mem_realloc(ws->heap, ws->heap_cap * sizeof(*ws->heap));
    }
    heap_set(ws, ws->nheap++, w);
    sift_up(ws, ws->nheap - 1);
    if (w->heap_index == 0)
        arm(ws);
}

static void heap_remove(tr_waits_t *ws, tr_waiter_t *w)
{
    unsigned i = w->heap_index;
    tr_waiter_t *last = ws->heap[--ws->nheap];
    if (last != w) {
        heap_set(ws, i, last);
        if (i > 0 && ws->heap[(i - 1) / 2]->deadline > last->deadline)
            sift_up(ws, i);
        else
            sift_down(ws, i);
    }
    if (i == 0)
        arm(ws);
}

/* ---- resuming ---- */

static void enqueue_ready(tr_waits_t *ws, tr_waiter_t *w, int status)
{
    w->ready = 1;
    w->status = status;
    w->next_ready = NULL;
    if (ws->ready_tail != NULL)
        ws->ready_tail->next_ready = w;
    else
        ws->ready_head = w;
    ws->ready_tail = w;
}

/* Resume every woken waiter, in the order they were woken. A resumed owner may park again or wake
 * others: those are queued behind and run in this pass too. */
static void run_ready(tr_waits_t *ws)
{
    tr_waiter_t *w;
    while ((w = ws->ready_head) != NULL) {
        ws->ready_head = w->next_ready;
        if (ws->ready_head == NULL)
            ws->ready_tail = NULL;
        w->ready = 0;
        w->parked = 0;
        w->resume(w, w->status);
    }
    if (ev_is_active(&ws->ready_watcher))
        ev_prepare_stop(ws->loop, &ws->ready_watcher);
}

static void on_ready(struct ev_loop *loop, ev_prepare *p, int revents)
{
    (void)loop, (void)revents;
    run_ready(p->data);
}

/* The timerfd fired: every waiter whose deadline has passed is resumed with TR_WAIT_EXPIRED. Those
 * that park again meanwhile have later deadlines and wait for the next expiry. */
static void on_deadline(struct ev_loop *loop, ev_io *io, int revents)
{
    tr_waits_t *ws = io->data;
    uint64_t expirations;
    (void)loop, (void)revents;
    if (read(ws->timer_fd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
        tr_log_error("wait timer: %s", strerror(errno));
    double now = tr_wait_clock();
    while (ws->nheap > 0 && ws->heap[0]->deadline <= now) {
        tr_waiter_t *w = ws->heap[0];
        heap_remove(ws, w);
        w->deadline = -1;
        enqueue_ready(ws, w, TR_WAIT_EXPIRED);
    }
    arm(ws);
    run_ready(ws);
}

int tr_waits_init(tr_waits_t *ws, struct ev_loop *loop)
{
    memset(ws, 0, sizeof(*ws));
    ws->loop = loop;
    ws->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (ws->timer_fd < 0)
        return -errno;
    ev_io_init(&ws->timer_io, on_deadline, ws->timer_fd, EV_READ);
    ws->timer_io.data = ws;
    ev_io_start(loop, &ws->timer_io);
    ev_prepare_init(&ws->ready_watcher, on_ready);
    ws->ready_watcher.data = ws;
    return 0;
}

void tr_waits_close(tr_waits_t *ws)
{
    if (ws->loop != NULL) {
        ev_io_stop(ws->loop, &ws->timer_io);
        ev_prepare_stop(ws->loop, &ws->ready_watcher);
    }
    if (ws->timer_fd >= 0)
        close(ws->timer_fd);
    ws->timer_fd = -1;
    tr_mem_free(ws->heap);
    ws->heap = NULL;
    ws->nheap = ws->heap_cap = 0;
}

void tr_wait_park(tr_waits_t *ws, tr_waiter_t *w, double deadline)
{
    w->parked = 1;
    w->ready = 0;
    w->deadline = deadline;
    if (deadline >= 0)
        heap_push(ws, w);
}

int tr_wait_wake(tr_waits_t *ws, tr_waiter_t *w, int status)
{
    if (!w->parked || w->ready)
        return -1;
    if (w->deadline >= 0) {
        heap_remove(ws, w);
        w->deadline = -1;
    }
    enqueue_ready(ws, w, status);
    if (!ev_is_active(&ws->ready_watcher))
        ev_prepare_start(ws->loop, &ws->ready_watcher);
    return 0;
}

void tr_wait_cancel(tr_waits_t *ws, tr_waiter_t *w)
{
    if (!w->parked)
        return;
    if (w->ready) {
        tr_waiter_t **p = &ws->ready_head, *prev = NULL;
        while (*p != w) {
            prev = *p;
            p = &(*p)->next_ready;
        }
        *p = w->next_ready;
        if (ws->ready_tail == w)
            ws->ready_tail = prev;
    } else if (w->deadline >= 0) {
        heap_remove(ws, w);
    }
    w->parked = w->ready = 0;
    w->deadline = -1;
}
