/*
 * The audit trail's reader over libpq (see audit_pg.h): the entries come from a cursor, FETCH_ROWS at
 * a time, inside one read-only REPEATABLE READ transaction.
 */
#include "audit_pg.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FETCH_ROWS "500"
#define CURSOR "triage_audit_entries"
/* SQLSTATE undefined_table. */
#define NO_SUCH_TABLE "42P01"

typedef struct pg_reader_s {
    tr_audit_reader_t reader; /* first: the reader is this struct */
    PGconn *conn;
    PGresult *batch; /* the rows of the last FETCH */
    int row, rows;   /* the next row of batch to give, and how many it has */
} pg_reader_t;

/* libpq's message for conn (or result), without its trailing line break. */
static void copy_message(char *err, size_t err_size, const char *what, const char *message)
{
    int n = (int)strlen(message);
    while (n > 0 && (message[n - 1] == '\n' || message[n - 1] == ' '))
        n--;
    snprintf(err, err_size, "%s: %.*s", what, n, message);
}

static int pg_next(tr_audit_reader_t *reader, tr_audit_entry_t *e, const char **hash, char *err, size_t err_size)
{
    pg_reader_t *r = (pg_reader_t *)reader;
    if (r->row == r->rows) {
        /* The entries given so far point into batch: their life ends here, as the reader's contract says. */
        PQclear(r->batch);
        r->batch = PQexec(r->conn, "FETCH " FETCH_ROWS " FROM " CURSOR);
        if (PQresultStatus(r->batch) != PGRES_TUPLES_OK) {
            copy_message(err, err_size, "reading the audit trail", PQerrorMessage(r->conn));
            r->rows = r->row = 0;
            return -1;
        }
        r->rows = PQntuples(r->batch);
        r->row = 0;
        if (r->rows == 0)
            return 0;
    }
    for (int i = 0; i < TR_AUDIT_FIELDS; i++) {
        if (PQgetisnull(r->batch, r->row, i)) {
            e->value[i] = NULL;
            e->len[i] = 0;
        } else {
            e->value[i] = PQgetvalue(r->batch, r->row, i);
            e->len[i] = (size_t)PQgetlength(r->batch, r->row, i);
        }
    }
    *hash = PQgetisnull(r->batch, r->row, TR_AUDIT_FIELDS) ? NULL : PQgetvalue(r->batch, r->row, TR_AUDIT_FIELDS);
    r->row++;
    return 1;
}

static int64_t pg_seq_of_hash(tr_audit_reader_t *reader, const char *hash)
{
    pg_reader_t *r = (pg_reader_t *)reader;
    const char *params[1] = {hash};
    PGresult *q = PQexecParams(r->conn, "SELECT seq FROM " TR_AUDIT_TABLE " WHERE hash = $1 ORDER BY seq LIMIT 1", 1,
                               NULL, params, NULL, NULL, 0);
    int64_t seq = 0;
    if (PQresultStatus(q) == PGRES_TUPLES_OK && PQntuples(q) == 1)
        seq = strtoll(PQgetvalue(q, 0, 0), NULL, 10);
    PQclear(q);
    return seq;
}

static void pg_close(tr_audit_reader_t *reader)
{
    pg_reader_t *r = (pg_reader_t *)reader;
    PQclear(r->batch);
    PQfinish(r->conn); /* the server rolls the read-only transaction back */
    free(r);
}

/* Run a statement that returns no rows; 0, or -1 with libpq's message in err. */
static int command(PGconn *conn, const char *sql, char *err, size_t err_size)
{
    PGresult *res = PQexec(conn, sql);
    int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (state != NULL && strcmp(state, NO_SUCH_TABLE) == 0)
            snprintf(err, err_size,
                     "database %s has no audit trail (table " TR_AUDIT_TABLE ", migrations/postgres/005_audit.sql)",
                     PQdb(conn));
        else
            copy_message(err, err_size, "cannot read the audit trail", PQerrorMessage(conn));
    }
    PQclear(res);
    return ok ? 0 : -1;
}

tr_audit_reader_t *tr_audit_pg_open(const char *url, char *err, size_t err_size)
{
    PGconn *conn = PQconnectdb(url);
    if (conn == NULL)
        abort(); /* libpq could not allocate its connection object */
    if (PQstatus(conn) != CONNECTION_OK) {
        copy_message(err, err_size, "cannot connect to PostgreSQL", PQerrorMessage(conn));
        PQfinish(conn);
        return NULL;
    }
    /* The hash is over UTF-8 bytes: have the server send text as UTF-8 whatever the database's encoding. */
    if (PQsetClientEncoding(conn, "UTF8") != 0) {
        copy_message(err, err_size, "cannot read the audit trail as UTF-8", PQerrorMessage(conn));
        PQfinish(conn);
        return NULL;
    }
    if (command(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", err, err_size) != 0 ||
        command(conn, "DECLARE " CURSOR " NO SCROLL CURSOR FOR " TR_AUDIT_SELECT_ENTRIES, err, err_size) != 0) {
        PQfinish(conn);
        return NULL;
    }
    pg_reader_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        abort();
    r->reader.next = pg_next;
    r->reader.seq_of_hash = pg_seq_of_hash;
    r->reader.close = pg_close;
    r->conn = conn;
    return &r->reader;
}
