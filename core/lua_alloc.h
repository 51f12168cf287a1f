/*
 * Lua memory counted per process, with a limit (--lua-memory-limit).
 *
 * Every Lua state made by tr_lua_alloc_state_new keeps LuaJIT's own allocator, wrapped: the wrapper
 * counts the bytes each state holds and the bytes all of them hold together (a worker has one state per
 * generation, and during a reload an old one may still run requests). While armed (only while Lua
 * runs under protection: a request's coroutine, the loading of a generation), an allocation or a
 * growing reallocation that would take the total past the limit is refused; LuaJIT raises it as a
 * "not enough memory" error in the code that asked. Frees and shrinking reallocations always succeed.
 *
 * The error path needs memory too (the traceback, the 500 response): after a refusal the bound moves
 * up by TR_LUA_ALLOC_HEADROOM until tr_lua_alloc_settle, which the caller runs once the protected
 * call has returned (after a full collection has given the memory back).
 *
 * Unarmed (C calling the Lua API outside protection, a collection from the worker's timer), nothing
 * is refused: a refusal there would be a LuaJIT panic, which aborts the process.
 */
#ifndef TR_LUA_ALLOC_H
#define TR_LUA_ALLOC_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

#define TR_LUA_ALLOC_HEADROOM ((size_t)4 << 20)
#define TR_LUA_ALLOC_MIN_LIMIT ((size_t)8 << 20) /* below this an application cannot even load */

typedef struct tr_lua_alloc_s {
    size_t limit;      /* bytes all states may hold together; SIZE_MAX / 2 until set: no limit */
    size_t bound;      /* enforced while armed: limit, or limit + TR_LUA_ALLOC_HEADROOM after a refusal */
    size_t used;       /* bytes held by every live state made by tr_lua_alloc_state_new */
    int armed;         /* refuse growth past bound (set around protected calls only) */
    uint64_t refusals; /* allocations refused, ever: compare before and after a call to detect one */
} tr_lua_alloc_t;

/* The process's counters (a worker is one process). */
extern tr_lua_alloc_t tr_lua_alloc;

/* Set the limit, in bytes, for the states of this process (those already made included). */
void tr_lua_alloc_set_limit(size_t limit);

/*
 * A new Lua state (luaL_newstate: LuaJIT's allocator) whose allocations are counted, or NULL when
 * out of memory. Close it with tr_lua_alloc_state_close, never lua_close.
 */
lua_State *tr_lua_alloc_state_new(void);

/* Close L (made by tr_lua_alloc_state_new) and stop counting what it held. */
void tr_lua_alloc_state_close(lua_State *L);

/* Bytes held by L (made by tr_lua_alloc_state_new), as counted by the wrapper. */
size_t tr_lua_alloc_state_used(lua_State *L);

/* After a protected call during which an allocation was refused (and the memory collected): the
 * bound goes back to the limit. */
void tr_lua_alloc_settle(void);

#endif
