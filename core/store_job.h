/*
 * A store job as both engines see it (store.c builds and hands it out; store.c's writer thread runs
 * it on SQLite, pg.c on PostgreSQL). Handlers reach it only through cdef.h's functions.
 */
#ifndef TR_STORE_JOB_H
#define TR_STORE_JOB_H

#include <stdint.h>

#include "ffi_cdef.h"
#include "pool.h"
#include "wait.h"

#define TR_STORE_JOB_STATEMENTS 32 /* statements in one job (one db:tx) at most */
#define TR_STORE_WAIT_SECONDS 30.0 /* a request gives up waiting for its commit after this */

struct tr_store_s;

enum tr_store_job_state { TR_JOB_BUILDING, TR_JOB_QUEUED, TR_JOB_DONE };

struct pg_result;

struct tr_store_job_s {
    struct tr_store_s *st;
    tr_waiter_t *waiter;
    enum tr_store_job_state state;
    int abandoned; /* its request stopped waiting: free it when the engine is done */
    /* The statements: per statement [u32 sql len][sql]['\0'][u32 nparams], then per parameter
     * [u8 type] and [8-byte value] or [u32 len][text]['\0'] (PostgreSQL takes NUL-terminated text). */
    tr_buf_t stmts;
    size_t nparams_at; /* offset of the current statement's parameter count */
    int nstmts;
    int read;                 /* a read (PostgreSQL): one statement, its rows in result */
    int audited;              /* it appends to the audit trail (PostgreSQL: its group takes the lock first) */
    struct pg_result *result; /* a read's rows, owned by the job (PQclear at release) */
    int kind;                 /* TR_STORE_* */
    char errmsg[320];
    int64_t changes[TR_STORE_JOB_STATEMENTS];
    int64_t rowid[TR_STORE_JOB_STATEMENTS];
    tr_store_job_t *next;
};

static inline uint32_t tr_store_job_u32(const char **p)
{
    uint32_t v;
    __builtin_memcpy(&v, *p, 4);
    *p += 4;
    return v;
}

#endif
