/*
 * Memory shared by the master and its workers (one anonymous MAP_SHARED mapping made before the first
 * fork). Each worker writes only its own slot; the master reads them to answer /_triage/status and
 * writes only the reload fields. Counters are plain words: a reader may see a value a moment old.
 */
#ifndef TR_SHARED_H
#define TR_SHARED_H

#include <pthread.h>
#include <stdint.h>

#define TR_MAX_WORKERS 256
#define TR_ERROR_MAX 2048

typedef struct tr_stats_s {
    volatile int32_t pid;
    volatile uint64_t requests;
    volatile uint64_t connections;
    volatile uint64_t connections_refused; /* at the cap, with no idle connection to close: 503 */
    volatile uint64_t connections_shed;    /* idle keep-alive connections closed to make room */
    volatile uint64_t timeouts;            /* connections closed on a deadline (408 where possible) */
    volatile uint64_t core_allocations;
    volatile uint64_t lua_memory;
    volatile uint64_t pool_conn_total, pool_conn_free;
    volatile uint64_t pool_req_total, pool_req_free;
    volatile uint64_t pool_buf_total, pool_buf_free;
    volatile uint64_t generation;         /* the generation this worker serves */
    volatile double generation_loaded_at; /* unix time */
    volatile uint64_t old_generations;    /* older generations still finishing requests */
    volatile uint64_t store_commits;      /* group commits of the store's writer (one WAL fsync each) */
    volatile uint64_t store_writes;       /* write jobs committed by them */
    char last_error[TR_ERROR_MAX];        /* this worker's last reload error, "" if none */
} tr_stats_t;

/*
 * The store's write lock, shared by the workers' writer threads: one group commit at a time. SQLite
 * has a write lock of its own, but a writer that finds it taken can only poll for it (sleeps of 1 to
 * 100 ms), and under load the worker that just committed takes it again first: the others starve.
 * This mutex wakes a waiter as soon as it is released, and its holder hands it over to a waiter
 * before taking it again (see store.c). Robust: a worker that dies holding it does not block the rest.
 */
typedef struct tr_store_lock_s {
    pthread_mutex_t mutex;     /* process-shared, robust */
    volatile uint32_t waiting; /* writer threads waiting for it */
    volatile uint32_t turns;   /* times it was taken */
} tr_store_lock_t;

typedef struct tr_shared_s {
    char code_root[512];          /* snapshots of each generation's code: code_root/<generation> */
    volatile uint64_t generation; /* the generation the master has published */
    volatile double generation_loaded_at;
    char last_reload_error[TR_ERROR_MAX]; /* the last failed preflight, "" once a reload succeeds */
    volatile double last_reload_at;
    volatile uint64_t reloads, reload_failures;
    tr_store_lock_t *store_lock; /* in a mapping of its own, shared with a new master (upgrade.h) */
    tr_stats_t workers[TR_MAX_WORKERS];
} tr_shared_t;

#endif
