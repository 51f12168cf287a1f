/*
 * A worker process: one libev loop, one listening socket (its slot's), the pools, and the generations
 * of the Lua application it runs. Workers share nothing in memory but their stats slot.
 */
#ifndef TR_WORKER_H
#define TR_WORKER_H

#include <ev.h>
#include <time.h>

#include "config.h"
#include "conn.h"
#include "pool.h"
#include "shared.h"

struct tr_worker_s {
    struct ev_loop *loop;
    const tr_config_t *cfg;
    int slot;
    int listen_fd;
    ev_io accept_io;
    ev_timer accept_retry; /* accept paused after EMFILE/ENFILE */
    ev_timer tick;         /* once a second: Date, idle sweep, log flush, stats */
    ev_signal sigterm, sigint, sigreload;
    ev_timer shutdown_timer;
    tr_pool_t conn_pool;
    tr_pool_t req_pool;
    tr_bufpool_t bufs;
    tr_stats_t *stats;
    tr_shared_t *shared;
    tr_gen_t *current; /* serves new requests */
    tr_gen_t *old;     /* older generations still running requests (list) */
    /* Requests suspended in triage.sleep: a min-heap on wake_at behind one timerfd, which wakes the
     * loop at the exact time (libev's own timers round epoll's timeout up to whole milliseconds). */
    int sleep_fd;
    ev_io sleep_io;
    tr_req_t **sleepers;
    unsigned nsleepers, sleepers_cap;
    tr_req_t *running; /* the request whose coroutine is being resumed */
    tr_conn_t conns;   /* list head: every open connection, least recently active first */
    unsigned nconns;
    uint64_t req_seq;
    time_t started;
    int shutting_down;
    char date_line[64]; /* "Date: Wed, 25 Nov 2026 01:02:03 GMT\r\n" */
    size_t date_len;
    time_t date_sec;
};

/* This process's worker; NULL in the master. */
extern tr_worker_t *tr_worker;

/* Initialise w's pools and state without a loop or socket (also used by the in-process test API). */
void tr_worker_init(tr_worker_t *w, const tr_config_t *cfg, int slot, tr_stats_t *stats);

/* Run a worker until it is told to stop; returns the process exit code. */
int tr_worker_run(const tr_config_t *cfg, int slot, int listen_fd, tr_shared_t *shared);

/* Copy pool sizes and Lua memory into the stats slot. */
void tr_worker_publish_stats(tr_worker_t *w);

/* A connection was closed: during shutdown the last one ends the loop. */
void tr_worker_conn_closed(tr_worker_t *w);

#endif
