/*
 * The SQL the core adds to a PostgreSQL store: run by the migration runner (core/pg_migrate.c) in one
 * transaction before the application's migrations, at every start, so every statement in it replaces
 * what an older server made (CREATE OR REPLACE). It defines:
 *
 * - triage_audit_hash(seq, at, who, action, record_table, record_id, route, request_id, before,
 *   after, reason, prev_hash) -> text: an audit entry's hash, the same 64 lower-case hex digits as
 *   tr_audit_hash (core/audit.h) for any UTF-8 text: the canonical form is built from the values'
 *   UTF-8 bytes (convert_to, octet_length), NULL written as "null", and hashed with sha256().
 *
 * - triage_audit_append(who, action, record_table, record_id, route, request_id, before, after,
 *   reason) -> bigint: appends an entry to audit_trail (the application's migration 005) linked to the
 *   last one and returns its seq. tx:audit runs it inside the transaction of the write it records.
 *
 * - triage_refuse(): a trigger function that refuses the change with the message given as the
 *   trigger's argument, under SQLSTATE 23000 (integrity_constraint_violation), so that the store
 *   reports it as a "constraint" error, as SQLite's RAISE(ABORT, ...) is. The migrations of append-only
 *   tables use it: CREATE TRIGGER t_no_update BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION
 *   triage_refuse('t is append-only').
 *
 * How the hash chain stays one chain when several nodes (and the workers of each) write:
 * triage_audit_append first takes pg_advisory_xact_lock(TR_PG_AUDIT_LOCK_KEY), a transaction-scoped
 * lock that PostgreSQL releases only once the transaction has committed or rolled back, and only then
 * reads the last entry. The function is VOLATILE, so under READ COMMITTED (the store's isolation) that
 * read takes a fresh snapshot, taken after the lock was granted: it sees the entry of every transaction
 * that held the lock before, since each one committed (or rolled back, taking its entry with it) before
 * letting go. So entries are appended one transaction at a time, in commit order, whichever node or
 * connection writes them, and each links to the one committed just before it. seq is the table's
 * primary key: should a transaction ever read a stale last entry (a caller under REPEATABLE READ), its
 * entry collides with the seq already taken and is refused, and the chain cannot fork. The lock is held
 * from the audited statement to COMMIT, so audited writes of all nodes commit one after the other; other
 * writes are not held up. The store takes the lock at the start of every group of writes that has an
 * audit entry (core/pg.c), before any of its rows, so two audited transactions cannot wait for each
 * other's rows while one waits for the lock. A cycle through a transaction without an audit entry
 * (it holds a row an audited one needs, and waits for a row the audited one wrote) is an ordinary
 * deadlock: PostgreSQL's check aborts one of them (SQLSTATE 40P01), and the store runs it again.
 */
#ifndef TR_PG_SCHEMA_H
#define TR_PG_SCHEMA_H

/* The advisory lock key of the audit chain, as SQL text (a bigint: "triage" in ASCII, then 2). The
 * migration runner's lock must use another key. */
#define TR_PG_AUDIT_LOCK_KEY "32776894229734658"

/* The core SQL, a NUL-terminated string of several statements (PQexec runs them in one go). */
extern const char tr_pg_core_sql[];

#endif
