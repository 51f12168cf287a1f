/*
 * The embedded store: one SQLite database (WAL, synchronous=FULL) under the data directory, shared
 * by every worker.
 *
 * Each worker has one writer thread that owns the worker's write connection. Requests queue write
 * jobs (a list of statements with their parameters, copied into the job); the writer takes every job
 * queued while it was busy and runs them as one transaction, each job in a savepoint of its own (a
 * job that fails, say on a constraint, is rolled back alone), then commits once: one fsync of the WAL
 * for the whole group. Each job's request is resumed, through core/wait.c, with its own result once
 * the commit is on disk. The loop thread never waits for the disk or a lock on a write.
 *
 * Writers of different workers are serialized by SQLite's write lock, which a writer thread waits
 * for (busy timeout) off the loop. Reads run on the loop thread on a read connection of the worker
 * (WAL readers do not wait for writers), through the LuaJIT FFI straight into SQLite.
 *
 * With no event loop (the in-process test library) a job runs at once in the caller's thread.
 */
#ifndef TR_STORE_H
#define TR_STORE_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

#include "ffi_cdef.h"
#include "pool.h"
#include "shared.h"
#include "store_job.h"
#include "wait.h"

#define TR_STORE_FILE "triage.db"

typedef struct tr_store_s tr_store_t;

/* Which store, and where. */
typedef struct tr_store_config_s {
    const char *data_dir; /* SQLite: data_dir/triage.db */
    const char *url;      /* --store postgres://...: PostgreSQL (pg.h) instead; NULL: SQLite */
    int connections;      /* PostgreSQL connections per worker (0: TR_PG_CONNECTIONS) */
} tr_store_config_t;

/*
 * Create data_dir if needed, open data_dir/triage.db (WAL) and apply the application's migrations
 * (app_dir/migrations/NNN_name.sql, in number order, each once, each in its own transaction,
 * recorded in the table triage_migrations). Returns the number applied now, or -1 with a message in
 * err naming the file that failed (the database is left as it was before that file). In migrations,
 * the SQL function triage_app_file('data/x.json') returns the text of a file of the application.
 */
int tr_store_migrate(const char *data_dir, const char *app_dir, char *err, size_t err_size);

/*
 * The store of a worker on data_dir/triage.db (migrated already); starts its writer thread. Its
 * connections open on first use and reopen after a failure. loop and waits NULL: no thread, jobs run
 * at once (in-process tests). stats may be NULL. lock: the workers' shared write lock (shared.h), NULL
 * with a single writer. Returns NULL with a message in err only if the thread cannot start.
 * With cfg->url, the store is PostgreSQL's (pg.h; migrated already by tr_pg_migrate): the same job
 * API, and reads are jobs too (tr_store_reader gives NULL).
 */
tr_store_t *tr_store_open(const tr_store_config_t *cfg, struct ev_loop *loop, tr_waits_t *waits, tr_stats_t *stats,
                          tr_store_lock_t *lock, char *err, size_t err_size);

/* TR_STORE_SQLITE or TR_STORE_POSTGRES (cdef.h). */
int tr_store_engine(const tr_store_t *st);

/* Was st opened without a loop, so that a job runs at once, in or out of a request (in-process tests)? */
int tr_store_synchronous(const tr_store_t *st);

/* Stop the writer once it has committed what is queued, and close the connections. */
void tr_store_close(tr_store_t *st);

/* Copy the database at data_dir/triage.db to dest, consistently, while the server runs (SQLite's
 * online backup). Returns 0, or -1 with a message in err. */
int tr_store_backup(const char *data_dir, const char *dest, char *err, size_t err_size);

/* The worker's read connection (opened on first use): a struct sqlite3 *, or NULL with *errmsg. */
struct sqlite3 *tr_store_reader(tr_store_t *st, const char **errmsg);

/* Jobs: see cdef.h (tr_ffi_store_*) for the contract. waiter is resumed when the job is done. */
tr_store_job_t *tr_store_job_new(tr_store_t *st, tr_waiter_t *waiter);
int tr_store_job_add(tr_store_job_t *job, const char *sql, size_t len);
int tr_store_job_bind(tr_store_job_t *job, int type, int64_t i, double d, const char *s, size_t len);
/* Queue the job; TR_FFI_YIELD when the waiter was parked, TR_FFI_OK when it ran at once, or
 * TR_FFI_ERROR with *errmsg (a malformed job). */
int tr_store_job_submit(tr_store_job_t *job, const char **errmsg);
int tr_store_job_result(tr_store_job_t *job, const char **errmsg);
int64_t tr_store_job_changes(const tr_store_job_t *job, int i);
int64_t tr_store_job_rowid(const tr_store_job_t *job, int i);
void tr_store_job_release(tr_store_job_t *job);

#endif
