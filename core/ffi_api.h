/*
 * The request API exported to Lua through the LuaJIT FFI (the tr_ffi_* functions).
 * The declarations and their contracts are in lua/triage/cdef.h, shared verbatim with ffi.cdef.
 *
 * The calls work on what the runner of this process (the Lua bridge in a worker, the test library
 * in specs) puts in tr_ffi_env: the request whose coroutine is running, and where requests wait.
 */
#ifndef TR_FFI_API_H
#define TR_FFI_API_H

#include "ffi_cdef.h"
#include "http.h"
#include "wait.h"

struct tr_store_s;

typedef struct tr_ffi_env_s {
    tr_req_t *running;        /* the request whose coroutine is being resumed; NULL between requests */
    tr_waits_t *waits;        /* where a request parks (tr_ffi_sleep); NULL: no event loop here */
    struct ev_loop *loop;     /* tr_ffi_now's clock; NULL: the wall clock */
    int slot;                 /* the worker slot, -1 outside a worker */
    struct tr_store_s *store; /* the worker's store; NULL: none */
    /* The request the watchdog's hook stopped (guard.h), and its number: its error is a timeout. */
    const tr_req_t *stopped;
    uint64_t stopped_seq;
} tr_ffi_env_t;

/* This process's; set by the runner before any request runs. */
extern tr_ffi_env_t tr_ffi_env;

/* r if the ctx (pub, serial) is still r's and r is running, else NULL. */
tr_req_t *tr_req_check(tr_req_pub_t *pub, uint32_t serial);

#endif
