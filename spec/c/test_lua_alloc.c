/*
 * The Lua memory limit (core/lua_alloc.h): what the counters see, what is refused and when, and that a
 * state goes on working after a refusal.
 */
#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>

#include "lua_alloc.h"
#include "test.h"

#define MiB ((size_t)1 << 20)

/* Grows a table of distinct strings until an allocation fails. */
static const char runaway[] = "local t, i = {}, 0 while true do i = i + 1 t[i] = ('x'):rep(200) .. i end";

/* Run code in L, armed as a request is; returns lua_pcall's code. */
static int run_armed(lua_State *L, const char *code)
{
    int rc = luaL_loadstring(L, code);
    ASSERT_INT_EQ(rc, 0);
    tr_lua_alloc.armed = 1;
    rc = lua_pcall(L, 0, 0, 0);
    tr_lua_alloc.armed = 0;
    return rc;
}

static void collect(lua_State *L)
{
    lua_settop(L, 0);
    lua_gc(L, LUA_GCCOLLECT, 0);
}

TEST_IMPL(lua_alloc_counts)
{
    tr_lua_alloc_set_limit((size_t)1 << 30);
    size_t before = tr_lua_alloc.used;
    lua_State *L = tr_lua_alloc_state_new();
    ASSERT_NOT_NULL(L);
    luaL_openlibs(L);
    size_t base = tr_lua_alloc.used;
    ASSERT(base > before);
    ASSERT_UINT_EQ(tr_lua_alloc_state_used(L), base - before);
    ASSERT_INT_EQ(run_armed(L, "big = {} for i = 1, 100000 do big[i] = ('%60d'):format(i) end"), 0);
    ASSERT(tr_lua_alloc.used >= base + 8 * MiB);
    ASSERT_INT_EQ(run_armed(L, "big = nil"), 0);
    collect(L);
    ASSERT(tr_lua_alloc.used < base + MiB);
    /* The counter agrees with LuaJIT's own count. */
    ASSERT_UINT_EQ(tr_lua_alloc_state_used(L),
                   (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB, 0));
    tr_lua_alloc_state_close(L);
    ASSERT_UINT_EQ(tr_lua_alloc.used, before);
}

TEST_IMPL(lua_alloc_limit)
{
    tr_lua_alloc_set_limit(16 * MiB);
    lua_State *L = tr_lua_alloc_state_new();
    ASSERT_NOT_NULL(L);
    luaL_openlibs(L);
    collect(L);
    size_t idle = tr_lua_alloc.used;
    for (int round = 0; round < 3; round++) {
        uint64_t refusals = tr_lua_alloc.refusals;
        ASSERT_INT_EQ(run_armed(L, runaway), LUA_ERRMEM);
        ASSERT_STR_EQ(lua_tostring(L, -1), "not enough memory");
        ASSERT_UINT_EQ(tr_lua_alloc.refusals, refusals + 1);
        ASSERT(tr_lua_alloc.used <= 16 * MiB);
        /* The error path may go past the limit, by the headroom at most. */
        ASSERT_UINT_EQ(tr_lua_alloc.bound, 16 * MiB + TR_LUA_ALLOC_HEADROOM);
        ASSERT_INT_EQ(run_armed(L, "local s = ('z'):rep(1024 * 1024) .. 'end'"), 0);
        collect(L);
        tr_lua_alloc_settle();
        ASSERT_UINT_EQ(tr_lua_alloc.bound, 16 * MiB);
        ASSERT(tr_lua_alloc.used < idle + 2 * MiB);
        /* The state goes on working. */
        ASSERT_INT_EQ(run_armed(L, "local t = {} for i = 1, 1000 do t[i] = i .. '' end assert(#t == 1000)"), 0);
    }
    tr_lua_alloc_state_close(L);
    tr_lua_alloc_set_limit(SIZE_MAX / 2);
}

/* Unarmed (C calling Lua outside protection), nothing is refused: a refusal would be a panic. */
TEST_IMPL(lua_alloc_unarmed)
{
    tr_lua_alloc_set_limit(16 * MiB);
    lua_State *L = tr_lua_alloc_state_new();
    ASSERT_NOT_NULL(L);
    luaL_openlibs(L);
    uint64_t refusals = tr_lua_alloc.refusals;
    ASSERT_INT_EQ(luaL_loadstring(L, "big = ('y'):rep(24 * 1024 * 1024)"), 0);
    ASSERT_INT_EQ(lua_pcall(L, 0, 0, 0), 0);
    ASSERT_UINT_EQ(tr_lua_alloc.refusals, refusals);
    ASSERT(tr_lua_alloc.used > 24 * MiB);
    tr_lua_alloc_state_close(L);
    tr_lua_alloc_set_limit(SIZE_MAX / 2);
}

/* The limit is for all the states of the process together (a worker's generations). */
TEST_IMPL(lua_alloc_states_share_the_limit)
{
    /* About 30 MiB and 25 MiB of strings: each fits under 48 MiB alone, not both. */
    static const char keep30[] = "kept = {} for i = 1, 250000 do kept[i] = ('%99d'):format(i) end";
    static const char take25[] = "local t = {} for i = 1, 200000 do t[i] = ('%99d'):format(i) end";
    tr_lua_alloc_set_limit(48 * MiB);
    lua_State *old = tr_lua_alloc_state_new(), *L = tr_lua_alloc_state_new();
    ASSERT_NOT_NULL(old);
    ASSERT_NOT_NULL(L);
    luaL_openlibs(old);
    luaL_openlibs(L);
    ASSERT_INT_EQ(run_armed(old, keep30), 0);
    ASSERT(tr_lua_alloc_state_used(old) > 24 * MiB);
    ASSERT_INT_EQ(run_armed(L, take25), LUA_ERRMEM);
    collect(L);
    tr_lua_alloc_settle();
    tr_lua_alloc_state_close(old); /* what it held is no longer counted */
    ASSERT(tr_lua_alloc.used < 8 * MiB);
    ASSERT_INT_EQ(run_armed(L, take25), 0);
    tr_lua_alloc_state_close(L);
    tr_lua_alloc_set_limit(SIZE_MAX / 2);
}
