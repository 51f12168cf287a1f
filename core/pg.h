/*
 * The store on PostgreSQL (--store postgres://...): a small pool of libpq connections per worker,
 * driven by the worker's own libev loop. Nothing blocks the loop: connections are made with
 * PQconnectStart/PQconnectPoll, and statements are sent and their results read in libpq's pipeline
 * mode as the socket allows. A request waiting on the database is parked (core/wait.c) like any
 * other wait, and resumed with its job's outcome.
 *
 * Writes: every write job queued in the worker when a connection is free goes into one transaction,
 * sent as one pipeline (BEGIN, the jobs' statements, COMMIT, Sync): one round trip and one commit for
 * the group. A job a constraint refuses (or whose SQL is wrong) is taken out and the rest sent again;
 * a deadlock or serialization failure re-runs the group (up to 3 times). A job is answered only once
 * COMMIT has returned (durability is PostgreSQL's: synchronous_commit, a synchronous standby). A
 * connection lost before COMMIT's answer fails its jobs as unavailable (503): never reported as
 * stored, and safe to retry with the idempotency key whether or not the commit happened.
 *
 * Reads: jobs too (one statement each, each in its own implicit transaction), pipelined on a free
 * connection; the job keeps the PGresult for the caller to read (core/lua/triage/store.lua, FFI).
 *
 * Outage: a lost connection is made again with backoff (at once, then 0.1 s doubling to 2 s). While no connection
 * works, jobs fail at once as unavailable (the sample app answers 503 with Retry-After) and the worker
 * reports the store down in its stats slot (/_triage/health answers 503).
 *
 * With no loop (the in-process test library) a job runs at once on one blocking connection.
 */
#ifndef TR_PG_H
#define TR_PG_H

#include <ev.h>
#include <stddef.h>

#include "shared.h"
#include "wait.h"

typedef struct tr_pg_s tr_pg_t;
struct tr_store_job_s;

#define TR_PG_CONNECTIONS 4 /* connections per worker, by default (--store-connections) */

/* Is url a PostgreSQL URL (postgres:// or postgresql://)? */
int tr_pg_is_url(const char *url);

/* A pool of connections to url (made now, in the background). loop NULL: synchronous, one blocking
 * connection opened on first use. stats may be NULL. release frees a job whose request stopped
 * waiting (tr_store_job_release). Returns NULL with err only when out of memory. */
tr_pg_t *tr_pg_open(const char *url, int connections, struct ev_loop *loop, tr_waits_t *waits, tr_stats_t *stats,
                    void (*release)(struct tr_store_job_s *job), char *err, size_t err_size);

/* Close the connections. Jobs still queued or in flight are failed as unavailable and not resumed
 * (their requests are gone); PostgreSQL rolls back a transaction in flight. */
void tr_pg_close(tr_pg_t *pg);

/* Queue job (built, TR_JOB_QUEUED): TR_FFI_YIELD when its waiter was parked; TR_FFI_OK when it is
 * already done (no loop, or no connection works: job->kind says how). */
int tr_pg_submit(tr_pg_t *pg, struct tr_store_job_s *job);

/* Free what a done job holds (a read's PGresult). */
void tr_pg_job_clear(struct tr_store_job_s *job);

#endif
