/*
 * Generations of the Lua application and the coroutines that run requests on them.
 */
#include "lua_vm.h"

#include <dirent.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ffi_api.h"
#include "log.h"
#include "lua_alloc.h"
#include "metrics.h"
#include "pool.h"

static volatile uint64_t unwatched;
volatile uint64_t *tr_vm_lua_running = &unwatched;
static volatile uint32_t unwatched_loading;
volatile uint32_t *tr_vm_lua_loading = &unwatched_loading;
lua_State *volatile tr_vm_active_L;
static uint64_t lua_runs;

static void enter_lua(lua_State *L)
{
    tr_vm_active_L = L;
    *tr_vm_lua_running = ++lua_runs;
}

static void leave_lua(void)
{
    *tr_vm_lua_running = 0;
    *tr_vm_lua_loading = 0;
    tr_vm_active_L = NULL;
}

static void set_error(char *err, size_t size, const char *what, lua_State *L)
{
    const char *msg = lua_tostring(L, -1);
    snprintf(err, size, "%s%s", what, msg ? msg : "(error object is not a string)");
}

static int is_route_file(const struct dirent *e)
{
    size_t n = strlen(e->d_name);
    return e->d_name[0] != '.' && n > 4 && strcmp(e->d_name + n - 4, ".lua") == 0;
}

/* lua_pcall with the Lua memory limit armed; sets *refused if an allocation was refused meanwhile. */
static int limited_pcall(lua_State *L, int nargs, int nresults, int *refused)
{
    uint64_t refusals = tr_lua_alloc.refusals;
    int armed = tr_lua_alloc.armed;
    tr_lua_alloc.armed = 1;
    int rc = lua_pcall(L, nargs, nresults, 0);
    tr_lua_alloc.armed = armed;
    if (tr_lua_alloc.refusals != refusals) {
        *refused = 1;
        tr_lua_alloc_settle();
    }
    return rc;
}

/* The load error of a generation that ran into the Lua memory limit (held by the caller's state L). */
static void set_memory_error(char *err, size_t size, lua_State *L)
{
    size_t mine = tr_lua_alloc_state_used(L), others = tr_lua_alloc.used - mine;
    snprintf(err, size,
             "loading the application needs more Lua memory than --lua-memory-limit allows (%zu MiB for all the "
             "Lua states of a worker, %zu MiB of it held by the generations already running): raise "
             "--lua-memory-limit, or make the route files and scripts load less at start",
             tr_lua_alloc.limit >> 20, others >> 20);
}

/* Push an array of the absolute paths of the route files (routes/NAME.lua), in name order. */
static void push_route_files(lua_State *L, const char *app_dir)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/routes", app_dir);
    struct dirent **list;
    int n = scandir(dir, &list, is_route_file, alphasort);
    lua_createtable(L, n > 0 ? n : 0, 0); /* stack: files */
    for (int i = 0; i < n; i++) {
        lua_pushfstring(L, "%s/%s", dir, list[i]->d_name); /* stack: files, path */
        lua_rawseti(L, -2, i + 1);                         /* stack: files */
        free(list[i]);
    }
    if (n >= 0)
        free(list);
}

/* A new state for an application whose code is in code_dir: the standard libraries, and the
 * framework's and the app's modules on package.path. NULL when out of memory. */
static lua_State *app_state(const tr_config_t *cfg, const char *code_dir)
{
    tr_lua_alloc_set_limit(cfg->lua_memory_limit);
    lua_State *L = tr_lua_alloc_state_new();
    if (L == NULL)
        return NULL;
    luaL_openlibs(L);
    lua_getglobal(L, "package"); /* stack: package */
    lua_getfield(L, -1, "path"); /* stack: package, path */
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s/scripts/?.lua;%s/scripts/?/init.lua;%s", cfg->lua_dir, cfg->lua_dir,
                    code_dir, code_dir, lua_tostring(L, -1)); /* stack: package, path, new */
    lua_setfield(L, -3, "path");                              /* stack: package, path */
    lua_pop(L, 2);                                            /* stack: (empty) */
    return L;
}

tr_gen_t *tr_gen_new(const tr_config_t *cfg, uint64_t id, const char *code_dir, const char *carried, size_t carried_len,
                     char *err, size_t err_size)
{
    lua_State *L = app_state(cfg, code_dir);
    if (L == NULL) {
        snprintf(err, err_size, "cannot create a Lua state (out of memory)");
        return NULL;
    }
    *tr_vm_lua_loading = 1;
    enter_lua(L);
    tr_gen_t *gen = tr_mem_alloc(sizeof(*gen));
    memset(gen, 0, sizeof(*gen));
    gen->L = L;
    gen->id = id;
    gen->router = tr_router_new();
    gen->dispatch_ref = LUA_NOREF;

    lua_getglobal(L, "require");      /* stack: require */
    lua_pushliteral(L, "triage.app"); /* stack: require, name */
    int refused = 0;
    if (limited_pcall(L, 1, 1, &refused) != 0) { /* stack: app | err */
        leave_lua();
        if (refused)
            set_memory_error(err, err_size, L);
        else
            set_error(err, err_size, "loading the framework: ", L);
        tr_gen_free(gen);
        return NULL;
    }
    lua_getfield(L, -1, "boot");     /* stack: app, boot */
    lua_pushstring(L, cfg->app_dir); /* stack: app, boot, dir */
    lua_pushlightuserdata(L, gen->router);
    lua_pushnumber(L, (lua_Number)id); /* stack: app, boot, dir, router, id */
    push_route_files(L, code_dir);     /* stack: app, boot, dir, router, id, files */
    if (carried != NULL)
        lua_pushlstring(L, carried, carried_len);
    else
        lua_pushnil(L);          /* stack: app, boot, dir, router, id, files, carried */
    lua_pushstring(L, code_dir); /* stack: app, boot, dir, router, id, files, carried, code */
    int rc = limited_pcall(L, 6, 1, &refused);
    leave_lua();
    if (rc != 0) { /* stack: app, err */
        if (refused)
            set_memory_error(err, err_size, L);
        else
            set_error(err, err_size, "", L);
        tr_gen_free(gen);
        return NULL;
    }
    if (!lua_isfunction(L, -1)) { /* stack: app, body */
        snprintf(err, err_size, "triage.app.boot did not return the request function");
        tr_gen_free(gen);
        return NULL;
    }
    gen->dispatch_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* stack: app */
    lua_settop(L, 0);
    gen->loaded_at = tr_wall_clock();
    return gen;
}

int tr_gen_check(const tr_config_t *cfg, FILE *out, int *nroutes)
{
    *nroutes = 0;
    lua_State *L = app_state(cfg, cfg->app_dir);
    if (L == NULL) {
        fprintf(out, "cannot create a Lua state (out of memory)\n");
        return -1;
    }
    enter_lua(L);
    tr_router_t *router = tr_router_new();
    int count = -1, refused = 0;
    lua_getglobal(L, "require");        /* stack: require */
    lua_pushliteral(L, "triage.check"); /* stack: require, name */
    if (limited_pcall(L, 1, 1, &refused) != 0) {
        fprintf(out, "loading the framework: %s\n", lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
        goto done;
    }
    lua_getfield(L, -1, "run");                  /* stack: check, run */
    lua_pushstring(L, cfg->app_dir);             /* stack: check, run, dir */
    lua_pushlightuserdata(L, router);            /* stack: check, run, dir, router */
    push_route_files(L, cfg->app_dir);           /* stack: check, run, dir, router, files */
    lua_pushstring(L, cfg->app_dir);             /* stack: check, run, dir, router, files, code */
    if (limited_pcall(L, 4, 2, &refused) != 0) { /* stack: check, err */
        if (refused) {
            char err[512];
            set_memory_error(err, sizeof(err), L);
            fprintf(out, "%s\n", err);
        } else {
            fprintf(out, "%s\n", lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
        }
        goto done;
    }
    *nroutes = (int)lua_tointeger(L, -1); /* stack: check, problems, nroutes */
    lua_pop(L, 1);                        /* stack: check, problems */
    count = (int)lua_objlen(L, -1);
    for (int i = 1; i <= count; i++) {
        lua_rawgeti(L, -1, i); /* stack: check, problems, problem */
        fprintf(out, "%s\n", lua_tostring(L, -1));
        lua_pop(L, 1); /* stack: check, problems */
    }
done:
    leave_lua();
    tr_lua_alloc_state_close(L);
    tr_router_free(router);
    return count;
}

void tr_gen_free(tr_gen_t *gen)
{
    if (gen == NULL)
        return;
    tr_lua_alloc_state_close(gen->L);
    tr_router_free(gen->router);
    tr_mem_free(gen->idle_cos);
    tr_mem_free(gen->idle_refs);
    tr_mem_free(gen->metric_slots);
    tr_mem_free(gen);
}

/* The string field `name` of the table on top of L's stack, copied to out (whole, or "" with
 * whole_only when it does not fit). */
static void copy_field(lua_State *L, const char *name, char *out, size_t size, int whole_only)
{
    size_t len = 0;
    lua_getfield(L, -1, name); /* stack: app, value */
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : "";
    if (len >= size)
        len = whole_only ? 0 : size - 1;
    memcpy(out, s, len);
    out[len] = '\0';
    lua_pop(L, 1); /* stack: app */
}

void tr_gen_environment(tr_gen_t *gen, char *json, size_t json_size, char *warnings, size_t warnings_size)
{
    lua_State *L = gen->L;
    json[0] = warnings[0] = '\0';
    lua_getglobal(L, "package");       /* stack: package */
    lua_getfield(L, -1, "loaded");     /* stack: package, loaded */
    lua_getfield(L, -1, "triage.app"); /* stack: package, loaded, app */
    if (lua_istable(L, -1)) {
        copy_field(L, "environment", json, json_size, 1);
        copy_field(L, "environment_warnings", warnings, warnings_size, 0);
    }
    lua_settop(L, 0);
}

void tr_gen_export_carried(tr_gen_t *gen, void (*fn)(const char *data, size_t len, void *arg), void *arg)
{
    lua_State *L = gen->L;
    lua_getglobal(L, "require");                                            /* stack: require */
    lua_pushliteral(L, "triage");                                           /* stack: require, name */
    if (lua_pcall(L, 1, 1, 0) == 0) {                                       /* stack: triage */
        lua_getfield(L, -1, "_export");                                     /* stack: triage, export */
        if (lua_pcall(L, 0, 1, 0) == 0 && lua_type(L, -1) == LUA_TSTRING) { /* stack: triage, blob */
            size_t len;
            const char *data = lua_tolstring(L, -1, &len);
            fn(data, len, arg);
        } else if (lua_type(L, -1) == LUA_TSTRING) {
            tr_log_error("triage.carry: exporting carried values failed: %s", lua_tostring(L, -1));
            fn(NULL, 0, arg);
        } else {
            fn(NULL, 0, arg);
        }
    } else {
        fn(NULL, 0, arg);
    }
    lua_settop(L, 0);
}

size_t tr_gen_lua_memory(tr_gen_t *gen)
{
    return (size_t)lua_gc(gen->L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(gen->L, LUA_GCCOUNTB, 0);
}

/* A coroutine ready to run the request function: from the idle list, or a new one (warm-up only). */
static lua_State *take_coroutine(tr_gen_t *gen, int *ref)
{
    if (gen->nidle > 0) {
        gen->nidle--;
        *ref = gen->idle_refs[gen->nidle];
        return gen->idle_cos[gen->nidle];
    }
    lua_State *L = gen->L;
    lua_State *co = lua_newthread(L);                     /* stack: co */
    *ref = luaL_ref(L, LUA_REGISTRYINDEX);                /* stack: (empty) */
    lua_rawgeti(L, LUA_REGISTRYINDEX, gen->dispatch_ref); /* stack: body */
    lua_xmove(L, co, 1);                                  /* stack: (empty); co: body */
    return co;
}

static void give_back_coroutine(tr_gen_t *gen, lua_State *co, int ref)
{
    if (gen->nidle == gen->idle_cap) {
        gen->idle_cap = gen->idle_cap ? gen->idle_cap * 2 : 64;
        gen->idle_cos = tr_mem_realloc(gen->idle_cos, gen->idle_cap * sizeof(*gen->idle_cos));
        gen->idle_refs = tr_mem_realloc(gen->idle_refs, gen->idle_cap * sizeof(*gen->idle_refs));
    }
    gen->idle_cos[gen->nidle] = co;
    gen->idle_refs[gen->nidle] = ref;
    gen->nidle++;
}

/*
 * An allocation of r's was refused by the Lua memory limit during its last resume (it raised "not
 * enough memory" in the handler, which answers 500, unless the handler caught it). Say which limit,
 * count the request, and give the memory back now: a full collection of r's generation (the runaway's
 * garbage is there; the other generations did not grow), after which the headroom the error path had
 * is withdrawn.
 */
static void memory_limit_reached(tr_req_t *r)
{
    tr_gen_t *gen = r->gen;
    char id[TR_REQUEST_ID_MAX];
    size_t id_len = tr_http_request_id(r, id);
    const char *route = tr_router_label(gen->router, r->pub.handler);
    size_t before = tr_lua_alloc.used;
    lua_gc(gen->L, LUA_GCCOLLECT, 0);
    tr_log_error("request %.*s (%s): Lua memory limit of %zu MiB (--lua-memory-limit) reached; "
                 "%zu MiB in use after a full collection (%zu MiB before)",
                 (int)id_len, id, route ? route : "no route", tr_lua_alloc.limit >> 20, tr_lua_alloc.used >> 20,
                 before >> 20);
    tr_lua_alloc_settle();
    gen->vm->stats->lua_memory_errors++;
    if (gen == gen->vm->current)
        gen->vm->renew = 1;
}

/* Resume r's coroutine until it finishes the request or parks. Returns 1 when r has finished
 * (its response serialized), 0 when it waits. */
static int run(tr_req_t *r)
{
    tr_gen_t *gen = r->gen;
    lua_State *co = r->co;
    tr_ffi_env.running = r;
    uint64_t refusals = tr_lua_alloc.refusals;
    int armed = tr_lua_alloc.armed;
    tr_lua_alloc.armed = 1;
    enter_lua(gen->L);
    int rc = lua_resume(co, 0);
    leave_lua();
    tr_lua_alloc.armed = armed;
    tr_ffi_env.running = NULL;
    if (tr_lua_alloc.refusals != refusals)
        memory_limit_reached(r);
    if (rc == LUA_YIELD && r->wait.parked)
        return 0; /* resumed from the loop, in on_resume */
    if (rc == LUA_YIELD && r->state == TR_REQ_FINISHED) {
        give_back_coroutine(gen, co, r->co_ref);
    } else {
        /* The request function catches handler errors itself; getting here means the coroutine died
         * or a handler yielded by itself. Either way it cannot be reused. */
        const char *msg = rc == LUA_YIELD ? "a handler yielded outside triage.sleep"
                          : rc == 0       ? "the request function returned"
                                          : lua_tostring(co, -1);
        tr_log_error("request %llx: %s", (unsigned long long)r->seq, msg ? msg : "unknown error");
        luaL_unref(gen->L, LUA_REGISTRYINDEX, r->co_ref);
        if (r->state != TR_REQ_FINISHED) {
            tr_http_respond_internal_error(r);
            r->state = TR_REQ_FINISHED;
        }
    }
    r->co = NULL;
    return 1;
}

static void remove_old(tr_vm_t *vm, tr_gen_t *gen)
{
    for (tr_gen_t **p = &vm->old; *p != NULL; p = &(*p)->next_old) {
        if (*p == gen) {
            *p = gen->next_old;
            vm->stats->old_generations--;
            return;
        }
    }
}

/* A request on gen has ended: unpin it, and close gen if it is old and now idle. */
static void unpin(tr_gen_t *gen)
{
    tr_vm_t *vm = gen->vm;
    gen->inflight--;
    if (gen != vm->current && gen->inflight == 0) {
        remove_old(vm, gen);
        tr_gen_free(gen);
    }
}

/* The one place a waiting request comes back: its sleep ended, or what it waited for arrived. */
static void on_resume(tr_waiter_t *waiter, int status)
{
    tr_req_t *r = (tr_req_t *)((char *)waiter - offsetof(tr_req_t, wait));
    tr_gen_t *gen = r->gen;
    (void)status;
    if (run(r)) {
        gen->vm->request_done(r);
        unpin(gen);
    }
}

/* The cool-down entry of gen's route `handler`, or NULL: the route is served. */
static const tr_cooldown_t *cooling(const tr_shared_t *sh, const tr_gen_t *gen, int handler)
{
    const char *label = tr_router_label(gen->router, handler);
    for (int i = 0; i < TR_MAX_COOLDOWNS && label != NULL; i++) {
        const tr_cooldown_t *c = &sh->cooldowns[i];
        if (c->generation == gen->id && strncmp(c->route, label, sizeof(c->route)) == 0)
            return c;
    }
    return NULL;
}

/* Answer r 503 without running its handler: its route is cooling down. */
static void refuse_cooling(tr_vm_t *vm, tr_req_t *r, const tr_cooldown_t *c)
{
    static const char body[] = "{\"error\":\"this route is paused: its handler ran past --handler-timeout "
                               "repeatedly; retry later\"}";
    double left = c->until - tr_wall_clock();
    char retry[48];
    snprintf(retry, sizeof(retry), "Retry-After: %d\r\n", left > 1 ? (int)(left + 0.999) : 1);
    vm->stats->cooldown_refusals++;
    tr_http_respond_core(r, 503, body, sizeof(body) - 1, retry);
    r->state = TR_REQ_FINISHED;
}

/* The first request of a handler on gen: intern its route's label (once per handler and generation). */
static uint16_t intern_metric_slot(tr_vm_t *vm, tr_gen_t *gen, int handler)
{
    if ((unsigned)handler >= gen->nmetric_slots) {
        unsigned n = (unsigned)handler + 1;
        gen->metric_slots = tr_mem_realloc(gen->metric_slots, n * sizeof(*gen->metric_slots));
        memset(gen->metric_slots + gen->nmetric_slots, 0, (n - gen->nmetric_slots) * sizeof(*gen->metric_slots));
        gen->nmetric_slots = n;
    }
    const char *label = tr_router_label(gen->router, handler);
    gen->metric_slots[handler] = (uint16_t)tr_metrics_route_slot(vm->metrics, label ? label : "unlabelled");
    return gen->metric_slots[handler];
}

/* The metrics slot of r's route (r routed on gen). */
static inline uint16_t metric_slot(tr_vm_t *vm, tr_gen_t *gen, int handler)
{
    if (vm->metrics == NULL || handler < 0)
        return TR_METRICS_UNMATCHED;
    if ((unsigned)handler < gen->nmetric_slots && gen->metric_slots[handler] != 0)
        return gen->metric_slots[handler];
    return intern_metric_slot(vm, gen, handler);
}

void tr_vm_on_request(void *data, tr_req_t *r)
{
    tr_vm_t *vm = data;
    tr_gen_t *gen = vm->current;
    tr_http_route(r, gen->router);
    r->metric_slot = metric_slot(vm, gen, r->pub.handler);
    if (vm->shared != NULL && vm->shared->ncooldowns != 0 && r->pub.handler > 0) {
        const tr_cooldown_t *c = cooling(vm->shared, gen, r->pub.handler);
        if (c != NULL) {
            vm->stats->requests++;
            refuse_cooling(vm, r, c);
            return;
        }
    }
    r->gen = gen;
    gen->inflight++;
    vm->stats->requests++;
    r->wait.resume = on_resume;
    r->co = take_coroutine(gen, &r->co_ref);
    if (run(r))
        unpin(gen);
}

void tr_vm_swap(tr_vm_t *vm, tr_gen_t *gen)
{
    tr_gen_t *old = vm->current;
    gen->vm = vm;
    vm->current = gen;
    vm->stats->generation = gen->id;
    vm->stats->generation_loaded_at = gen->loaded_at;
    if (old == NULL)
        return;
    if (old->inflight == 0) {
        tr_gen_free(old);
    } else {
        old->next_old = vm->old;
        vm->old = old;
        vm->stats->old_generations++;
    }
}

void tr_vm_collect(tr_vm_t *vm)
{
    if (vm->current != NULL)
        lua_gc(vm->current->L, LUA_GCCOLLECT, 0);
    for (tr_gen_t *g = vm->old; g != NULL; g = g->next_old)
        lua_gc(g->L, LUA_GCCOLLECT, 0);
}

size_t tr_vm_lua_memory(tr_vm_t *vm)
{
    size_t n = vm->current ? tr_gen_lua_memory(vm->current) : 0;
    for (tr_gen_t *g = vm->old; g != NULL; g = g->next_old)
        n += tr_gen_lua_memory(g);
    return n;
}
