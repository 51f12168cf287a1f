/*
 * Migrations on PostgreSQL (--store postgres://...), applied by the master at start with blocking
 * libpq calls, before any worker runs.
 *
 * Several nodes may start at once against one database: the runner holds a session advisory lock
 * (TR_PG_MIGRATION_LOCK) while it works, so one node applies what is missing and the others, waiting
 * on the lock, then find everything applied. Each migration runs in its own transaction and is
 * recorded in triage_migrations in it: a migration is applied entirely, once, or not at all.
 *
 * Before the app's migrations, the core's own SQL (pg_schema.h: the audit trail's functions) is
 * (re)created, in one transaction.
 *
 * A server with synchronous_commit = off or fsync = off is refused: it reports commits that a crash
 * can still take back.
 *
 * A migration's text is migrations/postgres/NNN_name.sql when that exists, else migrations/NNN_name.sql
 * (migrations.h). triage_app_file('data/x.json') in it (a literal path inside the application) is
 * replaced by the file's text as a dollar-quoted literal.
 */
#ifndef TR_PG_MIGRATE_H
#define TR_PG_MIGRATE_H

#include <stddef.h>

#define TR_PG_MIGRATION_LOCK 7415052361LL /* pg_advisory_lock key of the migration runner */

/* Apply app_dir's migrations not yet applied to the database at url. Returns how many were applied
 * now, or -1 with a message in err (naming the file that failed; the database is as it was before
 * that file). */
int tr_pg_migrate(const char *url, const char *app_dir, char *err, size_t err_size);

/* Run sql (no parameters) on a connection of its own, blocking. Returns 0, or -1 with err. */
int tr_pg_exec_once(const char *url, const char *sql, char *err, size_t err_size);

#endif
