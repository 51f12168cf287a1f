/* Migrations on PostgreSQL: see pg_migrate.h. */
#include "pg_migrate.h"

#include <errno.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "migrations.h"
#include "pg_schema.h"

typedef struct run_s {
    PGconn *conn;
    const char *app_dir;
    int applied;
} run_t;

/* Run sql (one or more statements, no parameters). Returns 0, or -1 with err "what: message". */
static int exec(PGconn *conn, const char *sql, const char *what, char *err, size_t err_size)
{
    PGresult *r = PQexec(conn, sql);
    ExecStatusType s = PQresultStatus(r);
    int ok = s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
    if (!ok) {
        /* PostgreSQL's primary message, as SQLite's would read ("relation \"x\" does not exist") */
        const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
        snprintf(err, err_size, "%s: %s", what, msg != NULL ? msg : PQerrorMessage(conn));
        err[strcspn(err, "\n")] = '\0';
    }
    PQclear(r);
    return ok ? 0 : -1;
}

static int applied_already(PGconn *conn, long version, int *found, char *err, size_t err_size)
{
    char v[32];
    snprintf(v, sizeof(v), "%ld", version);
    const char *values[1] = {v};
    PGresult *r =
        PQexecParams(conn, "SELECT 1 FROM triage_migrations WHERE version = $1", 1, NULL, values, NULL, NULL, 0);
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    if (ok)
        *found = PQntuples(r) > 0;
    else
        snprintf(err, err_size, "triage_migrations: %s", PQresultErrorMessage(r));
    PQclear(r);
    return ok ? 0 : -1;
}

/* A dollar-quote tag that does not occur in text: $triage$, $triage1$, ... */
static void quote_tag(const char *text, char *tag, size_t size)
{
    snprintf(tag, size, "$triage$");
    for (int i = 1; strstr(text, tag) != NULL; i++)
        snprintf(tag, size, "$triage%d$", i);
}

/*
 * sql with each triage_app_file('PATH') replaced by the text of app_dir/PATH as a dollar-quoted
 * literal (malloc'd), or NULL with err. PATH must stay inside the application.
 */
static char *substitute_app_files(const char *sql, const char *app_dir, const char *name, char *err, size_t err_size)
{
    static const char call[] = "triage_app_file('";
    size_t cap = strlen(sql) + 1, len = 0;
    char *out = malloc(cap);
    const char *p = sql, *hit;
    while (out != NULL && (hit = strstr(p, call)) != NULL) {
        const char *path = hit + sizeof(call) - 1, *end = strstr(path, "')");
        if (end == NULL || end - path >= 1024 || memchr(path, '\'', (size_t)(end - path)) != NULL) {
            snprintf(err, err_size, "migrations/%s: triage_app_file takes one literal path, like 'data/x.json'", name);
            free(out);
            return NULL;
        }
        char rel[1024], full[4096 + 1024 + 2];
        snprintf(rel, sizeof(rel), "%.*s", (int)(end - path), path);
        if (rel[0] == '/' || strstr(rel, "..") != NULL) {
            snprintf(err, err_size, "migrations/%s: triage_app_file: a path inside the application, like 'data/x.json'",
                     name);
            free(out);
            return NULL;
        }
        snprintf(full, sizeof(full), "%s/%s", app_dir, rel);
        size_t flen;
        char *text = tr_migrations_read_file(full, &flen);
        if (text == NULL) {
            snprintf(err, err_size, "migrations/%s: triage_app_file: cannot read %s: %s", name, rel, strerror(errno));
            free(out);
            return NULL;
        }
        char tag[32];
        quote_tag(text, tag, sizeof(tag));
        size_t before = (size_t)(hit - p), tlen = strlen(tag);
        size_t need = len + before + 2 * tlen + flen + strlen(end + 2) + 1;
        if (need > cap) {
            char *bigger = realloc(out, need);
            if (bigger == NULL) {
                free(out);
                free(text);
                break;
            }
            out = bigger;
            cap = need;
        }
        memcpy(out + len, p, before);
        len += before;
        memcpy(out + len, tag, tlen);
        len += tlen;
        memcpy(out + len, text, flen);
        len += flen;
        memcpy(out + len, tag, tlen);
        len += tlen;
        free(text);
        p = end + 2;
    }
    if (out == NULL) {
        snprintf(err, err_size, "migrations/%s: out of memory", name);
        return NULL;
    }
    size_t rest = strlen(p);
    if (len + rest + 1 > cap) {
        char *bigger = realloc(out, len + rest + 1);
        if (bigger == NULL) {
            free(out);
            snprintf(err, err_size, "migrations/%s: out of memory", name);
            return NULL;
        }
        out = bigger;
    }
    memcpy(out + len, p, rest + 1);
    return out;
}

static int migrate_one(void *arg, const char *dir, const char *name, long version, char *err, size_t err_size)
{
    run_t *run = arg;
    int found = 0;
    if (applied_already(run->conn, version, &found, err, err_size) != 0)
        return -1;
    if (found)
        return 0;
    char path[4096 + 256 + 16];
    snprintf(path, sizeof(path), "%s/postgres/%s", dir, name);
    if (access(path, F_OK) != 0)
        snprintf(path, sizeof(path), "%s/%s", dir, name);
    size_t len;
    char *text = tr_migrations_read_file(path, &len);
    if (text == NULL) {
        snprintf(err, err_size, "%s: cannot read: %s", path, strerror(errno));
        return -1;
    }
    char *sql = substitute_app_files(text, run->app_dir, name, err, err_size);
    free(text);
    if (sql == NULL)
        return -1;
    char what[300];
    snprintf(what, sizeof(what), "migrations/%s%s", strstr(path, "/postgres/") ? "postgres/" : "", name);
    char v[32];
    snprintf(v, sizeof(v), "%ld", version);
    const char *values[2] = {v, name};
    int rc = exec(run->conn, "BEGIN", what, err, err_size);
    if (rc == 0)
        rc = exec(run->conn, sql, what, err, err_size);
    if (rc == 0) {
        PGresult *r =
            PQexecParams(run->conn,
                         "INSERT INTO triage_migrations (version, name, applied_at) VALUES ($1, $2, "
                         "to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'))",
                         2, NULL, values, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            snprintf(err, err_size, "%s: triage_migrations: %s", what, PQresultErrorMessage(r));
            rc = -1;
        }
        PQclear(r);
    }
    if (rc == 0)
        rc = exec(run->conn, "COMMIT", what, err, err_size);
    free(sql);
    if (rc != 0) {
        PQclear(PQexec(run->conn, "ROLLBACK"));
        return -1;
    }
    run->applied++;
    return 0;
}

static void quiet(void *arg, const char *message)
{
    (void)arg, (void)message;
}

/* A blocking connection to url, or NULL with err. */
static PGconn *connect_to(const char *url, char *err, size_t err_size)
{
    PGconn *conn = PQconnectdb(url);
    if (PQstatus(conn) != CONNECTION_OK) {
        snprintf(err, err_size, "cannot connect to PostgreSQL: %s", PQerrorMessage(conn));
        size_t n = strlen(err);
        while (n > 0 && err[n - 1] == '\n')
            err[--n] = '\0';
        PQfinish(conn);
        return NULL;
    }
    PQsetNoticeProcessor(conn, quiet, NULL);
    return conn;
}

int tr_pg_exec_once(const char *url, const char *sql, char *err, size_t err_size)
{
    PGconn *conn = connect_to(url, err, err_size);
    if (conn == NULL)
        return -1;
    int rc = exec(conn, sql, "PostgreSQL", err, err_size);
    PQfinish(conn);
    return rc;
}

/*
 * A 2xx means the write is on disk: refuse a server that answers COMMIT before that
 * (synchronous_commit = off, or fsync = off), naming the setting. Returns 0, or -1 with err.
 */
static int check_durable(PGconn *conn, char *err, size_t err_size)
{
    static const char *const settings[] = {"synchronous_commit", "fsync"};
    for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++) {
        char sql[64];
        snprintf(sql, sizeof(sql), "SHOW %s", settings[i]);
        PGresult *r = PQexec(conn, sql);
        int off = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "off") == 0;
        PQclear(r);
        if (off) {
            snprintf(err, err_size,
                     "PostgreSQL runs with %s = off: a commit it reports may be lost in a crash, so a submission "
                     "acknowledged to a device could vanish. Set %s = on (README \"PostgreSQL\")",
                     settings[i], settings[i]);
            return -1;
        }
    }
    return 0;
}

int tr_pg_migrate(const char *url, const char *app_dir, char *err, size_t err_size)
{
    PGconn *conn = connect_to(url, err, err_size);
    if (conn == NULL)
        return -1;
    if (check_durable(conn, err, err_size) != 0) {
        PQfinish(conn);
        return -1;
    }
    char lock[128], unlock[128];
    snprintf(lock, sizeof(lock), "SELECT pg_advisory_lock(%lld)", TR_PG_MIGRATION_LOCK);
    snprintf(unlock, sizeof(unlock), "SELECT pg_advisory_unlock(%lld)", TR_PG_MIGRATION_LOCK);
    run_t run = {.conn = conn, .app_dir = app_dir};
    int rc = exec(conn, lock, "the migration lock", err, err_size);
    if (rc == 0)
        rc = exec(conn,
                  "CREATE TABLE IF NOT EXISTS triage_migrations (version bigint PRIMARY KEY, name text NOT NULL, "
                  "applied_at text NOT NULL)",
                  "triage_migrations", err, err_size);
    if (rc == 0) {
        rc = exec(conn, "BEGIN", "the core's SQL", err, err_size);
        if (rc == 0)
            rc = exec(conn, tr_pg_core_sql, "the core's SQL (pg_schema.c)", err, err_size);
        if (rc == 0)
            rc = exec(conn, "COMMIT", "the core's SQL", err, err_size);
        else
            PQclear(PQexec(conn, "ROLLBACK"));
    }
    if (rc == 0)
        rc = tr_migrations_each(app_dir, migrate_one, &run, err, err_size);
    PQclear(PQexec(conn, unlock)); /* (and the session's end releases it anyway) */
    PQfinish(conn);
    return rc == 0 ? run.applied : -1;
}
