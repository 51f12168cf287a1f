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
#include "metrics.h"
#include "pool.h"

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

tr_gen_t *tr_gen_new(const tr_config_t *cfg, uint64_t id, const char *code_dir, const char *carried, size_t carried_len,
                     char *err, size_t err_size)
{
    lua_State *L = luaL_newstate();
    if (L == NULL) {
        snprintf(err, err_size, "cannot create a Lua state (out of memory)");
        return NULL;
    }
    luaL_openlibs(L);
    tr_gen_t *gen = tr_mem_alloc(sizeof(*gen));
    memset(gen, 0, sizeof(*gen));
    gen->L = L;
    gen->id = id;
    gen->router = tr_router_new();
    gen->dispatch_ref = LUA_NOREF;

    lua_getglobal(L, "package"); /* stack: package */
    lua_getfield(L, -1, "path"); /* stack: package, path */
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s/scripts/?.lua;%s/scripts/?/init.lua;%s", cfg->lua_dir, cfg->lua_dir,
                    code_dir, code_dir, lua_tostring(L, -1)); /* stack: package, path, new */
    lua_setfield(L, -3, "path");                              /* stack: package, path */
    lua_pop(L, 2);                                            /* stack: (empty) */

    lua_getglobal(L, "require");      /* stack: require */
    lua_pushliteral(L, "triage.app"); /* stack: require, name */
    if (lua_pcall(L, 1, 1, 0) != 0) { /* stack: app | err */
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
        lua_pushnil(L);               /* stack: app, boot, dir, router, id, files, carried */
    lua_pushstring(L, code_dir);      /* stack: app, boot, dir, router, id, files, carried, code */
    if (lua_pcall(L, 6, 1, 0) != 0) { /* stack: app, body | err */
        set_error(err, err_size, "", L);
        tr_gen_free(gen);
        return NULL;
    }
    if (!lua_isfunction(L, -1)) {
        snprintf(err, err_size, "triage.app.boot did not return the request function");
        tr_gen_free(gen);
        return NULL;
    }
    gen->dispatch_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* stack: app */
    lua_settop(L, 0);
    gen->loaded_at = tr_wall_clock();
    return gen;
}

void tr_gen_free(tr_gen_t *gen)
{
    if (gen == NULL)
        return;
    lua_close(gen->L);
    tr_router_free(gen->router);
    tr_mem_free(gen->idle_cos);
    tr_mem_free(gen->idle_refs);
    tr_mem_free(gen->metric_slots);
    tr_mem_free(gen);
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

/* Resume r's coroutine until it finishes the request or parks. Returns 1 when r has finished
 * (its response serialized), 0 when it waits. */
static int run(tr_req_t *r)
{
    tr_gen_t *gen = r->gen;
    lua_State *co = r->co;
    tr_ffi_env.running = r;
    int rc = lua_resume(co, 0);
    tr_ffi_env.running = NULL;
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
