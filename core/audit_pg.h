/*
 * The audit trail read from a PostgreSQL store, for `triage audit verify|export --store URL`: a
 * tr_audit_reader_t (core/audit.h) over libpq, blocking (a command-line tool, not the server's loop).
 */
#ifndef TR_AUDIT_PG_H
#define TR_AUDIT_PG_H

#include <stddef.h>

#include "audit.h"

/*
 * Connect to url (a libpq URI or connection string; its search_path, given as options, selects the
 * schema), open one READ ONLY, REPEATABLE READ transaction, so that every entry is read from one
 * snapshot while the server goes on writing, and read audit_trail in seq order through a cursor (a few
 * hundred entries in memory at a time). Returns the reader, which tr_audit_reader_t.close rolls back,
 * disconnects and frees; or NULL with a message in err (the connection refused, no audit_trail table).
 * Messages never include the URL, which may hold a password.
 */
tr_audit_reader_t *tr_audit_pg_open(const char *url, char *err, size_t err_size);

#endif
