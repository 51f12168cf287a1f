/*
 * The Lua side of a worker: generations and the coroutines that run requests.
 *
 * A generation is one LuaJIT state with the application loaded into it (its modules, its route table
 * compiled into a C router, its middleware chains) plus a count of the requests running on it. A
 * worker serves new requests from its current generation; a request keeps the generation it started
 * on until it ends, and an old generation is closed when its last request has ended.
 *
 * Each request runs in a coroutine of its generation, taken from a per-generation free list and put
 * back when the request ends, so a request costs one lua_resume (more if it sleeps) and no new thread.
 */
#ifndef TR_LUA_VM_H
#define TR_LUA_VM_H

#include <lua.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "http.h"
#include "router.h"
#include "shared.h"

typedef struct tr_gen_s tr_gen_t;

/*
 * Runs of Lua code, published for the watchdog (guard.h): while a request's coroutine runs, or a
 * generation loads, *tr_vm_lua_running holds the number of that run (0 between runs) and
 * tr_vm_active_L its state. A worker points tr_vm_lua_running at its stats slot; elsewhere it is a
 * private word. Three stores per run: no clock, no system call.
 */
extern volatile uint64_t *tr_vm_lua_running;
extern volatile uint32_t *tr_vm_lua_loading; /* 1 while the run is a generation loading */
extern lua_State *volatile tr_vm_active_L;

struct tr_gen_s {
    lua_State *L;
    tr_router_t *router;
    uint64_t id;
    double loaded_at;
    unsigned inflight;
    int dispatch_ref;     /* registry ref of the coroutine body */
    lua_State **idle_cos; /* coroutines ready for a request */
    int *idle_refs;       /* their registry refs (anchors) */
    unsigned nidle, idle_cap;
    tr_gen_t *next_old;
    struct tr_vm_s *vm; /* the worker's, once swapped in */
    /* By handler number: its route's metrics slot (metrics.h), 0 until its first request. */
    uint16_t *metric_slots;
    unsigned nmetric_slots;
};

/*
 * Build a generation from cfg->app_dir: a new state, the framework and the application's route files
 * loaded, the router built. Returns NULL with a message in err (file:line: message) on any failure:
 * a syntax error, a failing require, an error thrown while loading, a bad or conflicting route.
 * The code (routes/, scripts/) is read from code_dir, the generation's snapshot (see snapshot.h); data
 * stays in cfg->app_dir. carried (may be NULL) is what the previous generation exported for
 * triage.carry.
 */
tr_gen_t *tr_gen_new(const tr_config_t *cfg, uint64_t id, const char *code_dir, const char *carried, size_t carried_len,
                     char *err, size_t err_size);
void tr_gen_free(tr_gen_t *gen);

/*
 * `triage check`: load the application in cfg->app_dir (read in place, no snapshot, no store) as
 * tr_gen_new would, in a state freed before returning, collecting every problem rather than stopping
 * at the first (triage/check.lua): each is written to out as "FILE:LINE: message", FILE relative to
 * the app. Returns the number of problems (0: it loads cleanly, *nroutes routes), or -1 when the
 * check itself could not run (the reason written to out).
 */
int tr_gen_check(const tr_config_t *cfg, FILE *out, int *nroutes);

/* What gen's scripts asked for and assigned while loading (triage/sandbox.lua): a JSON object at json
 * ("" if unknown) and the preflight's warnings, one per line, at warnings ("" if none). Both are
 * truncated to their size; a JSON object that does not fit is replaced by "". */
void tr_gen_environment(tr_gen_t *gen, char *json, size_t json_size, char *warnings, size_t warnings_size);

/* Serialize the values gen's scripts registered with triage.carry and pass them to fn (the bytes
 * live only during the call). */
void tr_gen_export_carried(tr_gen_t *gen, void (*fn)(const char *data, size_t len, void *arg), void *arg);

/* Lua memory in use by the generation, in bytes. */
size_t tr_gen_lua_memory(tr_gen_t *gen);

/*
 * The Lua side of one worker: its generations and where its requests wait.
 */
typedef struct tr_vm_s {
    tr_gen_t *current;         /* serves new requests */
    tr_gen_t *old;             /* older generations still running requests (list) */
    tr_stats_t *stats;         /* requests, generation and old-generation counts are published here */
    const tr_shared_t *shared; /* routes cooling down (watchdog.h); NULL: none */
    /* A request of the current generation hit --lua-memory-limit: the worker builds the generation
     * anew in a fresh state, and the old state, closed once its requests have ended, gives all its
     * memory back to the system (LuaJIT's allocator keeps freed pages for reuse while a state lives). */
    int renew;
    /* The worker's route counters (metrics.h), where each request's route slot is interned; NULL: none. */
    struct tr_worker_metrics_s *metrics;
    /* Called when a request that waited has finished (the server's tr_conn_request_done). */
    void (*request_done)(tr_req_t *r);
} tr_vm_t;

/*
 * Run r (parsed, not routed) on vm's current generation: the conn layer's on_request (vm is the
 * data). If the handler does not wait, r is finished when this returns; otherwise it finishes
 * later, from the loop, and vm->request_done(r) is called then.
 */
void tr_vm_on_request(void *vm, tr_req_t *r);

/* Make gen the current generation; the old one is closed once its requests have ended. */
void tr_vm_swap(tr_vm_t *vm, tr_gen_t *gen);

/* Lua memory in use by all of vm's generations, in bytes. */
size_t tr_vm_lua_memory(tr_vm_t *vm);

/* A full garbage collection of every generation: large strings a burst left behind (request bodies,
 * responses) go back to the system now rather than at the next collection, which an idle worker would
 * not reach. */
void tr_vm_collect(tr_vm_t *vm);

#endif
