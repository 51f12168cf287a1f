/*
 * LuaJIT's allocator wrapped to count bytes per state and per process, and to refuse growth past
 * the limit while armed.
 */
#include "lua_alloc.h"

#include <lauxlib.h>
#include <stdint.h>

#include "pool.h"

tr_lua_alloc_t tr_lua_alloc = {.limit = SIZE_MAX / 2, .bound = SIZE_MAX / 2};

/* The allocator data of a counted state: the allocator it wraps and the bytes the state holds. */
typedef struct counted_s {
    lua_Alloc inner;
    void *inner_data;
    size_t used;
} counted_t;

/*
 * The lua_Alloc of every counted state. LuaJIT passes the old size of the block (0 for a new one), so
 * nsize - osize is the change, modulo 2^64 when it shrinks. One compare on the path that grows; frees
 * and shrinks go straight through.
 */
static void *counting_alloc(void *data, void *ptr, size_t osize, size_t nsize)
{
    counted_t *c = data;
    tr_lua_alloc_t *a = &tr_lua_alloc;
    if (nsize > osize && a->armed && a->used + (nsize - osize) > a->bound) {
        a->refusals++;
        a->bound = a->limit + TR_LUA_ALLOC_HEADROOM; /* room for the error to be raised and answered */
        return NULL;
    }
    void *p = c->inner(c->inner_data, ptr, osize, nsize);
    if (p != NULL || nsize == 0) {
        c->used += nsize - osize;
        a->used += nsize - osize;
    }
    return p;
}

void tr_lua_alloc_set_limit(size_t limit)
{
    tr_lua_alloc.limit = limit;
    tr_lua_alloc.bound = limit;
}

lua_State *tr_lua_alloc_state_new(void)
{
    lua_State *L = luaL_newstate();
    if (L == NULL)
        return NULL;
    counted_t *c = tr_mem_alloc(sizeof(*c));
    c->inner = lua_getallocf(L, &c->inner_data);
    /* What the state allocated before the wrapper was installed (its global state). */
    c->used = (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
    tr_lua_alloc.used += c->used;
    lua_setallocf(L, counting_alloc, c);
    return L;
}

void tr_lua_alloc_state_close(lua_State *L)
{
    void *data;
    lua_getallocf(L, &data);
    counted_t *c = data;
    /* Closed with LuaJIT's own allocator back in place: lua_close releases the allocator's arena only
     * when it finds its own function there. */
    lua_setallocf(L, c->inner, c->inner_data);
    lua_close(L);
    tr_lua_alloc.used -= c->used;
    tr_mem_free(c);
}

size_t tr_lua_alloc_state_used(lua_State *L)
{
    void *data;
    lua_getallocf(L, &data);
    return ((counted_t *)data)->used;
}

void tr_lua_alloc_settle(void)
{
    tr_lua_alloc.bound = tr_lua_alloc.limit;
}
