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
#define TR_ROUTE_LABEL_MAX 160 /* "METHOD pattern" of a route, as logs and status show it (truncated) */
#define TR_MAX_COOLDOWNS 16    /* routes cooling down at once */
#define TR_SCRIPT_ENV_MAX 4096

typedef struct tr_stats_s {
    volatile int32_t pid;
    volatile uint64_t requests;
    volatile uint64_t connections;
    volatile uint64_t connections_refused; /* at the cap, with no idle connection to close: 503 */
    volatile uint64_t connections_shed;    /* idle keep-alive connections closed to make room */
    volatile uint64_t timeouts;            /* connections closed on a deadline (408 where possible) */
    volatile uint64_t core_allocations;
    volatile uint64_t lua_memory;
    volatile uint64_t lua_memory_limit;  /* --lua-memory-limit, bytes */
    volatile uint64_t lua_memory_errors; /* requests during which the limit refused an allocation */
    volatile uint64_t pool_conn_total, pool_conn_free;
    volatile uint64_t pool_req_total, pool_req_free;
    volatile uint64_t pool_buf_total, pool_buf_free;
    volatile uint64_t generation;         /* the generation this worker serves */
    volatile double generation_loaded_at; /* unix time */
    volatile uint64_t old_generations;    /* older generations still finishing requests */
    volatile uint64_t store_commits;      /* group commits of the store's writer (one WAL fsync each) */
    volatile uint64_t store_writes;       /* write jobs committed by them */
    volatile int32_t store_down;          /* PostgreSQL: no connection of this worker works (pg.h) */
    char last_error[TR_ERROR_MAX];        /* this worker's last reload error, "" if none */
    /* The watchdog (guard.h in the worker, watchdog.h in the master). lua_running is the number of
     * the worker's current run of Lua code (a request's handler, resumed or not, or a generation
     * loading), 0 between runs: a value the master sees unchanged for --handler-timeout is a handler
     * that does not give the loop back. Not reset when a worker replaces another in the slot. */
    volatile uint64_t lua_running;
    volatile uint32_t lua_loading;        /* the run is a generation loading (a longer budget) */
    volatile uint64_t handler_timeouts;   /* requests stopped past --handler-timeout (a replacement too) */
    volatile uint64_t cooldown_refusals;  /* requests answered 503 because their route was cooling down */
    volatile uint64_t stopped_generation; /* the generation and route of the last stopped request */
    char stopped_route[TR_ROUTE_LABEL_MAX];
    char stop_report[512]; /* what a worker that had to be replaced did last, for the master's log */
} tr_stats_t;

/* A route whose handler was stopped repeatedly: answered 503 until the master lifts it. Only requests
 * on the generation it tripped on are refused (a reload with a fix goes live at once). */
typedef struct tr_cooldown_s {
    volatile uint64_t generation; /* 0: free entry */
    volatile double until;        /* wall-clock time the master lifts it */
    char route[TR_ROUTE_LABEL_MAX];
} tr_cooldown_t;

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
    /* The published generation's script environment, a JSON object: what the app asked for with
     * allow and the globals it assigned while loading (triage/sandbox.lua). */
    char script_environment[TR_SCRIPT_ENV_MAX];
    struct tr_metrics_s *metrics;          /* per-route counters (metrics.h): their own mapping */
    tr_store_lock_t *store_lock;           /* in a mapping of its own, shared with a new master (upgrade.h) */
    volatile uint64_t worker_replacements; /* workers replaced by the watchdog (a handler it could not stop) */
    volatile uint32_t ncooldowns;          /* entries of cooldowns in use: workers look only when non-zero */
    tr_cooldown_t cooldowns[TR_MAX_COOLDOWNS];
    tr_stats_t workers[TR_MAX_WORKERS];
} tr_shared_t;

#endif
