/*
 * The store on PostgreSQL: connections, pipelines, group commit, reconnection. See pg.h.
 */
#include "pg.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ffi_cdef.h"
#include "log.h"
#include "pg_schema.h"
#include "store_job.h"

#define BATCH_MAX 256   /* write jobs in one transaction at most */
#define READS_MAX 64    /* reads sent at once on one connection */
#define RETRIES 3       /* re-runs of a group after a deadlock or serialization failure */
#define BACKOFF_MIN 0.1 /* seconds before connecting again after a failure; doubles up to: */
#define BACKOFF_MAX 2.0
#define CONNECT_TIMEOUT 10.0
#define UNIT_TIMEOUT TR_STORE_WAIT_SECONDS /* a connection that answers nothing for this long is dropped */

enum conn_state { CONN_DOWN, CONN_CONNECTING, CONN_IDLE, CONN_BUSY };

/* What the next result on a connection answers, in the order the pipeline was sent. */
enum expect_kind { EXP_BEGIN, EXP_ROLLBACK, EXP_PREPARE, EXP_STMT, EXP_COMMIT, EXP_SYNC, EXP_IGNORE };

typedef struct expect_s {
    enum expect_kind kind;
    int index; /* the statement's index in its job; EXP_PREPARE: its slot in the statement cache */
    tr_store_job_t *job;
} expect_t;

/*
 * Statements prepared on a connection, by SQL text: PostgreSQL parses and plans each once per
 * connection instead of once per request. A slot's PREPARE is sent in the same pipeline as the
 * statement's first execution (the pipeline keeps them in order); a PREPARE that fails or is skipped
 * frees its slot again.
 */
#define STMT_CACHE 64
enum { STMT_FREE, STMT_SENT, STMT_READY };

typedef struct pg_stmt_s {
    char *sql;
    size_t len;
    uint32_t hash;
    int nparams; /* sql is followed by its NUL and the parameters' signature (params_t) */
    unsigned id; /* its name: "t<id>" */
    int state;
    uint64_t used;
} pg_stmt_t;

typedef struct pg_conn_s {
    tr_pg_t *pg;
    PGconn *conn;
    enum conn_state state;
    ev_io io;
    int io_fd;
    ev_timer timer; /* CONN_DOWN: the next attempt; otherwise the deadline of the attempt or the unit */
    double backoff;
    /* The unit in flight: a write group or a set of reads. */
    tr_store_job_t *jobs;
    int writing;
    int retries;
    int rollback_first; /* the connection is in a failed transaction: ROLLBACK before the next group */
    int committed;
    int rerun;      /* a job was taken out of the group, or a deadlock: send the rest again */
    int group_kind; /* the group failed as a whole (TR_STORE_*); 0: not */
    char group_why[300];
    expect_t *expect;
    unsigned nexpect, next_expect, expect_cap;
    pg_stmt_t stmts[STMT_CACHE];
    uint64_t stmt_clock;
    unsigned stmt_ids;
} pg_conn_t;

/*
 * Parameters of one statement, as libpq takes them: values in text format, with their types. A Lua
 * integer is sent as bigint and a float as double precision, so that they are numbers wherever SQL
 * uses them (SELECT ? AS n gives a number, as on SQLite); a text or NULL is sent with no type, and
 * PostgreSQL takes the type the statement gives it (a text, timestamp or boolean column). sig has a
 * letter per parameter for those types ('i', 'd', 'u'): a statement is prepared once per signature.
 */
typedef struct params_s {
    const char **values;
    Oid *types;
    char *sig;
    char *numbers; /* the text of integer and float parameters */
    unsigned cap;
} params_t;

#define INT8_OID 20
#define FLOAT8_OID 701

struct tr_pg_s {
    char *url;
    struct ev_loop *loop;
    tr_waits_t *waits;
    tr_stats_t *stats;
    int nconns;
    pg_conn_t *conns;
    tr_store_job_t *writes_head, *writes_tail;
    tr_store_job_t *reads_head, *reads_tail;
    int down;     /* no connection works, and the last attempt failed: jobs fail at once */
    int reported; /* the outage is in the log already */
    char down_why[256];
    params_t params;
    PGconn *sync_conn; /* no loop */
    void (*release)(tr_store_job_t *job);
};

static void stmt_free(pg_stmt_t *st)
{
    free(st->sql);
    memset(st, 0, sizeof(*st));
}

/* ---- outcomes ---- */

/* Cut s at its first line: libpq's messages go on with hints on lines of their own ("Is the server
 * running on that host...") and end in a newline. */
static void first_line(char *s)
{
    s[strcspn(s, "\n")] = '\0';
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == ' ')
        s[--n] = '\0';
}

static void set_error(tr_store_job_t *job, int kind, const char *msg)
{
    job->kind = kind;
    snprintf(job->errmsg, sizeof(job->errmsg), "%s", msg);
    first_line(job->errmsg);
}

/* The kind of a failed statement's error, from its SQLSTATE; *retry set for a deadlock or a
 * serialization failure; *drop set when the connection should be made again (a server going down,
 * or a standby that cannot take writes after a failover). */
static int classify(const PGresult *r, int *retry, int *drop)
{
    const char *state = r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    *retry = *drop = 0;
    if (state == NULL)
        return TR_STORE_UNAVAILABLE;
    if (strncmp(state, "23", 2) == 0)
        return TR_STORE_CONSTRAINT;
    if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0) {
        *retry = 1;
        return TR_STORE_UNAVAILABLE;
    }
    if (strcmp(state, "25006") == 0 || strncmp(state, "08", 2) == 0 || strncmp(state, "57", 2) == 0) {
        *drop = 1;
        return TR_STORE_UNAVAILABLE;
    }
    if (strncmp(state, "53", 2) == 0 || strncmp(state, "58", 2) == 0 || strncmp(state, "XX", 2) == 0)
        return TR_STORE_UNAVAILABLE;
    return TR_STORE_SQL_ERROR;
}

/* The message of a failed result: PostgreSQL's primary message (not its detail, which may quote the
 * row's values), else libpq's. */
static void result_message(char *out, size_t size, const char *prefix, const PGresult *r, PGconn *conn)
{
    const char *msg = r != NULL ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (msg == NULL && r != NULL)
        msg = PQresultErrorMessage(r);
    if ((msg == NULL || *msg == '\0') && conn != NULL)
        msg = PQerrorMessage(conn);
    snprintf(out, size, "%s%s", prefix, msg != NULL && *msg ? msg : "no answer from PostgreSQL");
    first_line(out);
}

/* Counts of a statement that succeeded: rows changed, and the first column of the first row it
 * returned (INSERT ... RETURNING id) as its id. */
static void record(tr_store_job_t *job, int k, const PGresult *r)
{
    const char *n = PQcmdTuples((PGresult *)r);
    job->changes[k] = *n ? strtoll(n, NULL, 10) : 0;
    job->rowid[k] = 0;
    if (PQntuples(r) > 0 && PQnfields(r) > 0 && !PQgetisnull(r, 0, 0))
        job->rowid[k] = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
}

/* ---- parameters ---- */

/* The statement k of a job starting at *p: its SQL (and length), and its parameters in pp. Advances *p past it.
 * Returns the number of parameters, or -1 with the job failed (a text with a NUL byte). */
static int statement(params_t *pp, tr_store_job_t *job, const char **p, const char **sql, size_t *sql_len_out)
{
    uint32_t sql_len = tr_store_job_u32(p);
    *sql = *p;
    *sql_len_out = sql_len;
    *p += sql_len + 1;
    uint32_t n = tr_store_job_u32(p);
    if (n > pp->cap) {
        unsigned cap = n < 16 ? 16 : n;
        const char **values = realloc(pp->values, cap * sizeof(*values));
        if (values != NULL)
            pp->values = values;
        Oid *types = values ? realloc(pp->types, cap * sizeof(*types)) : NULL;
        if (types != NULL)
            pp->types = types;
        char *sig = types ? realloc(pp->sig, cap) : NULL;
        if (sig != NULL)
            pp->sig = sig;
        char *numbers = sig ? realloc(pp->numbers, (size_t)cap * 32) : NULL;
        if (numbers == NULL) {
            set_error(job, TR_STORE_UNAVAILABLE, "storage unavailable: out of memory for the parameters");
            return -1;
        }
        pp->numbers = numbers;
        pp->cap = cap;
    }
    int bad = 0;
    for (uint32_t i = 0; i < n; i++) {
        int type = (unsigned char)*(*p)++;
        char *num = pp->numbers + (size_t)i * 32;
        if (type == TR_STORE_INT) {
            int64_t v;
            memcpy(&v, *p, 8);
            *p += 8;
            snprintf(num, 32, "%lld", (long long)v);
            pp->values[i] = num;
            pp->types[i] = INT8_OID, pp->sig[i] = 'i';
        } else if (type == TR_STORE_DOUBLE) {
            double v;
            memcpy(&v, *p, 8);
            *p += 8;
            snprintf(num, 32, "%.17g", v);
            pp->values[i] = num;
            pp->types[i] = FLOAT8_OID, pp->sig[i] = 'd';
        } else if (type == TR_STORE_TEXT) {
            uint32_t len = tr_store_job_u32(p);
            pp->values[i] = *p;
            pp->types[i] = 0, pp->sig[i] = 'u';
            if (strlen(*p) != len && !bad) {
                char msg[160];
                snprintf(msg, sizeof(msg), "parameter %u holds a NUL byte, which PostgreSQL text cannot store", i + 1);
                set_error(job, TR_STORE_SQL_ERROR, msg);
                bad = 1;
            }
            *p += len + 1;
        } else {
            pp->values[i] = NULL;
            pp->types[i] = 0, pp->sig[i] = 'u';
        }
    }
    return bad ? -1 : (int)n;
}

/* ---- the synchronous engine (no loop: in-process specs) ---- */

static PGresult *sync_exec(tr_pg_t *pg, const char *sql)
{
    return PQexec(pg->sync_conn, sql);
}

static void run_sync(tr_pg_t *pg, tr_store_job_t *job)
{
    job->kind = TR_STORE_DONE;
    if (pg->sync_conn != NULL && PQstatus(pg->sync_conn) != CONNECTION_OK) {
        PQfinish(pg->sync_conn);
        pg->sync_conn = NULL;
    }
    if (pg->sync_conn == NULL) {
        pg->sync_conn = PQconnectdb(pg->url);
        if (PQstatus(pg->sync_conn) != CONNECTION_OK) {
            char msg[300];
            snprintf(msg, sizeof(msg), "storage unavailable: cannot connect to PostgreSQL: %s",
                     PQerrorMessage(pg->sync_conn));
            set_error(job, TR_STORE_UNAVAILABLE, msg);
            PQfinish(pg->sync_conn);
            pg->sync_conn = NULL;
            return;
        }
    }
    if (!job->read)
        PQclear(sync_exec(pg, "BEGIN"));
    const char *p = job->stmts.data;
    for (int k = 0; k < job->nstmts; k++) {
        const char *sql;
        size_t sql_len;
        int n = statement(&pg->params, job, &p, &sql, &sql_len);
        if (n < 0)
            break;
        PGresult *r = PQexecParams(pg->sync_conn, sql, n, pg->params.types, pg->params.values, NULL, NULL, 0);
        ExecStatusType s = PQresultStatus(r);
        if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
            int retry, drop;
            int kind = classify(r, &retry, &drop);
            char msg[320];
            result_message(msg, sizeof(msg), kind == TR_STORE_UNAVAILABLE ? "storage unavailable: " : "", r,
                           pg->sync_conn);
            set_error(job, kind, msg);
            PQclear(r);
            break;
        }
        record(job, k, r);
        if (job->read)
            job->result = (struct pg_result *)r;
        else
            PQclear(r);
    }
    if (job->read)
        return;
    PGresult *end = sync_exec(pg, job->kind == TR_STORE_DONE ? "COMMIT" : "ROLLBACK");
    if (job->kind == TR_STORE_DONE && PQresultStatus(end) != PGRES_COMMAND_OK) {
        char msg[320];
        result_message(msg, sizeof(msg), "storage unavailable: ", end, pg->sync_conn);
        set_error(job, TR_STORE_UNAVAILABLE, msg);
    }
    PQclear(end);
}

/* ---- the asynchronous engine ---- */

static void conn_connect(pg_conn_t *c);
static void dispatch(tr_pg_t *pg);

static void finish_job(tr_pg_t *pg, tr_store_job_t *job)
{
    job->state = TR_JOB_DONE;
    job->next = NULL;
    if (job->abandoned)
        pg->release(job);
    else
        tr_wait_wake(pg->waits, job->waiter, job->kind);
}

/* Fail every queued job: no connection works. */
static void fail_queued(tr_pg_t *pg)
{
    char msg[320];
    snprintf(msg, sizeof(msg), "storage unavailable: PostgreSQL cannot be reached: %s", pg->down_why);
    tr_store_job_t *lists[2] = {pg->writes_head, pg->reads_head};
    pg->writes_head = pg->writes_tail = pg->reads_head = pg->reads_tail = NULL;
    for (int i = 0; i < 2; i++)
        for (tr_store_job_t *j = lists[i], *next; j != NULL; j = next) {
            next = j->next;
            set_error(j, TR_STORE_UNAVAILABLE, msg);
            finish_job(pg, j);
        }
}

static int any_working(const tr_pg_t *pg)
{
    for (int i = 0; i < pg->nconns; i++)
        if (pg->conns[i].state == CONN_IDLE || pg->conns[i].state == CONN_BUSY)
            return 1;
    return 0;
}

static void set_down(tr_pg_t *pg, int down)
{
    pg->down = down;
    if (pg->stats != NULL)
        pg->stats->store_down = down;
}

static void watch(pg_conn_t *c, int events)
{
    struct ev_loop *loop = c->pg->loop;
    int fd = PQsocket(c->conn);
    if (ev_is_active(&c->io) && (c->io_fd != fd || (c->io.events & (EV_READ | EV_WRITE)) != events))
        ev_io_stop(loop, &c->io);
    if (fd < 0)
        return;
    if (!ev_is_active(&c->io)) {
        ev_io_set(&c->io, fd, events);
        c->io_fd = fd;
        ev_io_start(loop, &c->io);
    }
}

static void arm_timer(pg_conn_t *c, double after)
{
    ev_timer_stop(c->pg->loop, &c->timer);
    ev_timer_set(&c->timer, after, 0.);
    ev_timer_start(c->pg->loop, &c->timer);
}

/* The connection is lost (or unusable): its unit's jobs fail as unavailable, and it is made again
 * after the backoff. */
static void conn_drop(pg_conn_t *c, const char *why)
{
    tr_pg_t *pg = c->pg;
    char msg[320];
    snprintf(msg, sizeof(msg), "storage unavailable: %s", why);
    first_line(msg);
    /* A group whose COMMIT was answered is stored: only its last Sync was lost. Anything else may or
     * may not have committed; it is reported unavailable, never stored. */
    int stored = c->writing && c->committed;
    for (tr_store_job_t *j = c->jobs, *next; j != NULL; j = next) {
        next = j->next;
        if (j->kind == TR_STORE_DONE && !stored)
            set_error(j, TR_STORE_UNAVAILABLE, msg);
        finish_job(pg, j);
    }
    c->jobs = NULL;
    c->committed = 0;
    c->nexpect = c->next_expect = 0;
    for (int i = 0; i < STMT_CACHE; i++) /* a new connection has prepared nothing */
        stmt_free(&c->stmts[i]);
    if (ev_is_active(&c->io))
        ev_io_stop(pg->loop, &c->io);
    PQfinish(c->conn);
    c->conn = NULL;
    int was_working = c->state == CONN_IDLE || c->state == CONN_BUSY;
    c->state = CONN_DOWN;
    if (was_working)
        c->backoff = 0; /* a working connection lost: try again at once, then back off */
    arm_timer(c, c->backoff);
    c->backoff = c->backoff < BACKOFF_MIN ? BACKOFF_MIN : c->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : c->backoff * 2;
    if (!any_working(pg)) {
        snprintf(pg->down_why, sizeof(pg->down_why), "%s", why);
        first_line(pg->down_why);
        if (!pg->reported)
            tr_log_error("store: PostgreSQL unreachable: %s", pg->down_why);
        pg->reported = 1;
        set_down(pg, 1);
        fail_queued(pg);
    }
}

static int expect(pg_conn_t *c, enum expect_kind kind, tr_store_job_t *job, int index)
{
    if (c->nexpect == c->expect_cap) {
        unsigned cap = c->expect_cap ? c->expect_cap * 2 : 256;
        expect_t *e = realloc(c->expect, cap * sizeof(*e));
        if (e == NULL)
            return -1;
        c->expect = e;
        c->expect_cap = cap;
    }
    c->expect[c->nexpect++] = (expect_t){.kind = kind, .index = index, .job = job};
    return 0;
}

static int send_plain(pg_conn_t *c, const char *sql, enum expect_kind kind)
{
    return PQsendQueryParams(c->conn, sql, 0, NULL, NULL, NULL, NULL, 0) == 1 ? expect(c, kind, NULL, 0) : -1;
}

static uint32_t sql_hash(const char *sql, size_t len, const char *sig, int nparams)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)sql[i]) * 16777619u;
    for (int i = 0; i < nparams; i++)
        h = (h ^ (unsigned char)sig[i]) * 16777619u;
    return h;
}

/* The name of sql's prepared statement on c (for the parameters' types in pp) at name, sending its
 * PREPARE (and a DEALLOCATE of the statement whose slot it takes) first when it has none. Returns 0,
 * or -1 when the connection failed. */
static int prepared(pg_conn_t *c, tr_store_job_t *job, const char *sql, size_t len, const params_t *pp, int nparams,
                    char name[16])
{
    uint32_t h = sql_hash(sql, len, pp->sig, nparams);
    pg_stmt_t *victim = &c->stmts[0];
    for (int i = 0; i < STMT_CACHE; i++) {
        pg_stmt_t *st = &c->stmts[i];
        if (st->state != STMT_FREE && st->hash == h && st->len == len && st->nparams == nparams &&
            memcmp(st->sql, sql, len) == 0 &&
            (nparams == 0 || memcmp(st->sql + len + 1, pp->sig, (size_t)nparams) == 0)) {
            st->used = ++c->stmt_clock;
            snprintf(name, 16, "t%u", st->id);
            return 0;
        }
        if (victim->state != STMT_FREE && (st->state == STMT_FREE || st->used < victim->used))
            victim = st;
    }
    if (victim->state != STMT_FREE) {
        char drop[32];
        snprintf(drop, sizeof(drop), "DEALLOCATE t%u", victim->id);
        if (PQsendQueryParams(c->conn, drop, 0, NULL, NULL, NULL, NULL, 0) != 1 || expect(c, EXP_IGNORE, NULL, 0) != 0)
            return -1;
        stmt_free(victim);
    }
    victim->sql = malloc(len + 1 + (size_t)nparams);
    if (victim->sql == NULL)
        return -1;
    memcpy(victim->sql, sql, len + 1);
    if (nparams > 0) /* (no signature yet before a statement with parameters: sig is NULL) */
        memcpy(victim->sql + len + 1, pp->sig, (size_t)nparams);
    victim->len = len;
    victim->nparams = nparams;
    victim->hash = h;
    victim->id = ++c->stmt_ids;
    victim->state = STMT_SENT;
    victim->used = ++c->stmt_clock;
    snprintf(name, 16, "t%u", victim->id);
    if (PQsendPrepare(c->conn, name, sql, nparams, pp->types) != 1 ||
        expect(c, EXP_PREPARE, job, (int)(victim - c->stmts)) != 0)
        return -1;
    return 0;
}

/* Send the statements of job. Returns 0, or -1 when the connection failed. A job whose parameters
 * cannot be sent is failed and left out (none of its statements is sent). */
static int send_job(pg_conn_t *c, tr_store_job_t *job)
{
    tr_pg_t *pg = c->pg;
    const char *p = job->stmts.data, *sql;
    size_t len;
    for (int k = 0; k < job->nstmts; k++) /* all its parameters can be sent, or none of it is */
        if (statement(&pg->params, job, &p, &sql, &len) < 0)
            return 0;
    p = job->stmts.data;
    for (int k = 0; k < job->nstmts; k++) {
        int n = statement(&pg->params, job, &p, &sql, &len);
        char name[16];
        if (prepared(c, job, sql, len, &pg->params, n, name) != 0 ||
            PQsendQueryPrepared(c->conn, name, n, pg->params.values, NULL, NULL, 0) != 1 ||
            expect(c, EXP_STMT, job, k) != 0)
            return -1;
    }
    return 0;
}

/* Send the unit held by c: the group (BEGIN, jobs, COMMIT, Sync) or the reads (each, Sync). */
static void send_unit(pg_conn_t *c)
{
    c->nexpect = c->next_expect = 0;
    c->committed = c->rerun = c->group_kind = 0;
    int rc = 0;
    if (c->writing) {
        if (c->rollback_first)
            rc = send_plain(c, "ROLLBACK", EXP_ROLLBACK);
        c->rollback_first = 0;
        if (rc == 0)
            rc = send_plain(c, "BEGIN", EXP_BEGIN);
        /* A group that appends to the audit trail takes the chain's lock before it writes anything
         * (triage_audit_append takes it again, at no cost): a group then never holds a row another
         * group waits for while it waits for the lock (a deadlock PostgreSQL would break only after
         * deadlock_timeout). Groups with no audit entry do not wait for it. */
        int audited = 0;
        for (tr_store_job_t *j = c->jobs; j != NULL; j = j->next)
            audited |= j->audited && j->kind == TR_STORE_DONE;
        if (rc == 0 && audited)
            rc = send_plain(c, "SELECT pg_advisory_xact_lock(" TR_PG_AUDIT_LOCK_KEY ")", EXP_BEGIN);
        for (tr_store_job_t *j = c->jobs; j != NULL && rc == 0; j = j->next)
            if (j->kind == TR_STORE_DONE)
                rc = send_job(c, j);
        if (rc == 0)
            rc = send_plain(c, "COMMIT", EXP_COMMIT);
        if (rc == 0)
            rc = PQpipelineSync(c->conn) == 1 ? expect(c, EXP_SYNC, NULL, 0) : -1;
    } else {
        if (c->rollback_first) /* a group before left the connection in its failed transaction */
            rc = send_plain(c, "ROLLBACK", EXP_ROLLBACK);
        c->rollback_first = 0;
        for (tr_store_job_t *j = c->jobs; j != NULL && rc == 0; j = j->next)
            if (j->kind == TR_STORE_DONE && (rc = send_job(c, j)) == 0)
                rc = PQpipelineSync(c->conn) == 1 ? expect(c, EXP_SYNC, NULL, 0) : -1;
    }
    if (rc != 0) {
        char why[300];
        snprintf(why, sizeof(why), "PostgreSQL connection failed: %s", PQerrorMessage(c->conn));
        conn_drop(c, why);
        return;
    }
    c->state = CONN_BUSY;
    arm_timer(c, UNIT_TIMEOUT);
    int f = PQflush(c->conn);
    if (f < 0) {
        conn_drop(c, "PostgreSQL connection failed while sending");
        return;
    }
    watch(c, EV_READ | (f == 1 ? EV_WRITE : 0));
}

/* The unit is answered (its last Sync read): resume its jobs, or send the group again. */
static void unit_done(pg_conn_t *c)
{
    tr_pg_t *pg = c->pg;
    if (!c->writing) /* a read skipped (its pipeline aborted before it) has no rows, not an empty set */
        for (tr_store_job_t *j = c->jobs; j != NULL; j = j->next)
            if (j->kind == TR_STORE_DONE && j->result == NULL)
                set_error(j, TR_STORE_UNAVAILABLE,
                          c->group_kind ? c->group_why : "storage unavailable: the read was not run");
    if (c->writing && !c->committed && c->group_kind == 0 && c->rerun) {
        /* A job was refused (it keeps its error) or a deadlock hit the group: the transaction
         * is aborted; roll it back and send what is left. */
        c->rollback_first = 1;
        int left = 0;
        for (tr_store_job_t *j = c->jobs; j != NULL; j = j->next)
            left += j->kind == TR_STORE_DONE;
        if (left > 0) {
            send_unit(c);
            return;
        }
    }
    if (c->writing && !c->committed) {
        c->rollback_first = 1;
        if (c->group_kind != 0)
            for (tr_store_job_t *j = c->jobs; j != NULL; j = j->next)
                if (j->kind == TR_STORE_DONE)
                    set_error(j, c->group_kind, c->group_why);
    }
    if (c->writing && c->committed && pg->stats != NULL) {
        uint64_t n = 0;
        for (tr_store_job_t *j = c->jobs; j != NULL; j = j->next)
            n += j->kind == TR_STORE_DONE;
        pg->stats->store_commits++;
        pg->stats->store_writes += n;
    }
    tr_store_job_t *j = c->jobs;
    c->jobs = NULL;
    c->state = CONN_IDLE;
    ev_timer_stop(pg->loop, &c->timer);
    watch(c, EV_READ);
    while (j != NULL) {
        tr_store_job_t *next = j->next;
        finish_job(pg, j);
        j = next;
    }
    dispatch(pg);
}

/* One result of the pipeline, answering e. Returns -1 when the connection must be dropped. */
static int on_result(pg_conn_t *c, expect_t *e, PGresult *r, char *why, size_t why_size)
{
    ExecStatusType s = PQresultStatus(r);
    int ok = s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
    if (e->kind == EXP_PREPARE) {
        pg_stmt_t *st = &c->stmts[e->index];
        if (ok)
            st->state = STMT_READY;
        else if (st->state == STMT_SENT)
            stmt_free(st); /* prepared again at its next use; its executions here fail or were skipped */
        if (s != PGRES_FATAL_ERROR)
            return 0;
        /* A statement that does not parse: the error is its job's (the execution is skipped). */
    }
    if (e->kind == EXP_IGNORE || s == PGRES_PIPELINE_ABORTED)
        return 0; /* skipped after an earlier error of the same pipeline */
    int retry = 0, drop = 0, kind = ok ? 0 : classify(r, &retry, &drop);
    if (!ok && drop) {
        result_message(why, why_size, "", r, c->conn);
        return -1;
    }
    const char *state = ok ? NULL : PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (state != NULL && strcmp(state, "26000") == 0 && c->retries < RETRIES) {
        /* A prepared statement the connection no longer has: forget them all, and send again. */
        for (int i = 0; i < STMT_CACHE; i++)
            stmt_free(&c->stmts[i]);
        c->retries++;
        c->rerun = 1;
        return 0;
    }
    switch (e->kind) {
    case EXP_PREPARE: /* (failed: its error is its job's, as an execution's would be) */
    case EXP_STMT:
        if (ok) {
            record(e->job, e->index, r);
            if (e->job->read) {
                e->job->result = (struct pg_result *)r;
                return 1; /* kept */
            }
        } else if (retry && !e->job->read && c->retries < RETRIES) {
            c->retries++;
            c->rerun = 1;
        } else if (kind == TR_STORE_UNAVAILABLE && !e->job->read) {
            c->group_kind = TR_STORE_UNAVAILABLE;
            result_message(c->group_why, sizeof(c->group_why), "storage unavailable: ", r, c->conn);
        } else {
            char msg[320];
            result_message(msg, sizeof(msg), kind == TR_STORE_UNAVAILABLE ? "storage unavailable: " : "", r, c->conn);
            set_error(e->job, kind, msg);
            c->rerun = 1;
        }
        break;
    case EXP_COMMIT:
        if (ok) {
            c->committed = 1;
        } else if (c->group_kind == 0) {
            c->group_kind = kind == TR_STORE_CONSTRAINT ? TR_STORE_CONSTRAINT : TR_STORE_UNAVAILABLE;
            result_message(c->group_why, sizeof(c->group_why), "storage unavailable: commit failed: ", r, c->conn);
        }
        break;
    case EXP_BEGIN:
    case EXP_ROLLBACK:
        if (!ok && c->group_kind == 0) {
            c->group_kind = TR_STORE_UNAVAILABLE;
            result_message(c->group_why, sizeof(c->group_why), "storage unavailable: ", r, c->conn);
        }
        break;
    case EXP_SYNC:
    case EXP_IGNORE: break;
    }
    return 0;
}

/* Read what has arrived and handle each complete result. */
static void conn_read(pg_conn_t *c)
{
    char why[320];
    if (PQconsumeInput(c->conn) != 1) {
        snprintf(why, sizeof(why), "PostgreSQL connection lost: %s", PQerrorMessage(c->conn));
        conn_drop(c, why);
        return;
    }
    int ends = 0;
    while (c->state == CONN_BUSY && c->next_expect < c->nexpect && !PQisBusy(c->conn)) {
        PGresult *r = PQgetResult(c->conn);
        if (r == NULL) {
            if (++ends > 1)
                break; /* (two ends in a row: nothing is pending; never spin here) */
            continue;  /* the end of one statement's results: the next one's follow */
        }
        ends = 0;
        expect_t *e = &c->expect[c->next_expect++];
        if (e->kind == EXP_SYNC) {
            PQclear(r);
            if (c->next_expect == c->nexpect) {
                unit_done(c);
                return;
            }
            continue;
        }
        int kept = on_result(c, e, r, why, sizeof(why));
        if (kept <= 0)
            PQclear(r);
        if (kept < 0) {
            conn_drop(c, why);
            return;
        }
    }
    if (c->state == CONN_IDLE) {
        /* Nothing asked: the server is closing the connection (a shutdown) or sent a notice. */
        PGresult *r;
        while (!PQisBusy(c->conn) && (r = PQgetResult(c->conn)) != NULL)
            PQclear(r);
        if (PQstatus(c->conn) == CONNECTION_BAD) {
            snprintf(why, sizeof(why), "PostgreSQL closed the connection: %s", PQerrorMessage(c->conn));
            conn_drop(c, why);
        }
    }
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    pg_conn_t *c = w->data;
    (void)loop;
    if (c->state == CONN_CONNECTING) {
        conn_connect(c);
        return;
    }
    if (revents & EV_WRITE) {
        int f = PQflush(c->conn);
        if (f < 0) {
            conn_drop(c, "PostgreSQL connection failed while sending");
            return;
        }
        watch(c, EV_READ | (f == 1 ? EV_WRITE : 0));
    }
    if (revents & EV_READ)
        conn_read(c);
}

static void on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    pg_conn_t *c = t->data;
    (void)loop, (void)revents;
    if (c->state == CONN_DOWN)
        conn_connect(c);
    else if (c->state == CONN_CONNECTING)
        conn_drop(c, "PostgreSQL did not accept the connection in time");
    else if (c->state == CONN_BUSY)
        conn_drop(c, "no answer from PostgreSQL in time");
}

static void quiet(void *arg, const char *message)
{
    (void)arg, (void)message; /* notices (e.g. "relation already exists, skipping") are not errors */
}

/* Start connecting (CONN_DOWN), or go on (CONN_CONNECTING). */
static void conn_connect(pg_conn_t *c)
{
    tr_pg_t *pg = c->pg;
    if (c->state == CONN_DOWN) {
        c->conn = PQconnectStart(pg->url);
        if (c->conn == NULL || PQstatus(c->conn) == CONNECTION_BAD || PQsetnonblocking(c->conn, 1) != 0) {
            char why[300];
            snprintf(why, sizeof(why), "cannot connect: %s", c->conn ? PQerrorMessage(c->conn) : "out of memory");
            conn_drop(c, why);
            return;
        }
        PQsetNoticeProcessor(c->conn, quiet, NULL);
        c->state = CONN_CONNECTING;
        arm_timer(c, CONNECT_TIMEOUT);
        watch(c, EV_WRITE);
        return;
    }
    switch (PQconnectPoll(c->conn)) {
    case PGRES_POLLING_READING: watch(c, EV_READ); return;
    case PGRES_POLLING_WRITING: watch(c, EV_WRITE); return;
    case PGRES_POLLING_OK: break;
    default: {
        char why[300];
        snprintf(why, sizeof(why), "cannot connect: %s", PQerrorMessage(c->conn));
        conn_drop(c, why);
        return;
    }
    }
    if (PQenterPipelineMode(c->conn) != 1) {
        conn_drop(c, "cannot enter pipeline mode");
        return;
    }
    c->state = CONN_IDLE;
    c->backoff = 0;
    c->rollback_first = 0;
    ev_timer_stop(pg->loop, &c->timer);
    watch(c, EV_READ);
    if (pg->down || pg->reported)
        tr_log_info("store: PostgreSQL reachable again");
    pg->reported = 0;
    set_down(pg, 0);
    dispatch(pg);
}

static int writing_now(const tr_pg_t *pg)
{
    for (int i = 0; i < pg->nconns; i++)
        if (pg->conns[i].state == CONN_BUSY && pg->conns[i].writing)
            return 1;
    return 0;
}

/*
 * Give free connections work: the queued writes as one group, then the reads. One group of writes at
 * a time per worker: the writes that arrive while it commits make the next group, the larger the
 * busier the worker (the same group commit as SQLite's writer thread). Splitting them over several
 * connections would only make smaller groups that wait for each other: groups with audit entries
 * commit one at a time anyway (the chain's lock), and each commit waits for its own WAL flush.
 */
static void dispatch(tr_pg_t *pg)
{
    for (int i = 0; i < pg->nconns && (pg->writes_head != NULL || pg->reads_head != NULL); i++) {
        pg_conn_t *c = &pg->conns[i];
        if (c->state != CONN_IDLE)
            continue;
        int writing = pg->writes_head != NULL && !writing_now(pg);
        if (!writing && pg->reads_head == NULL)
            break; /* writes wait for the group in flight */
        tr_store_job_t **head = writing ? &pg->writes_head : &pg->reads_head;
        tr_store_job_t **tail = writing ? &pg->writes_tail : &pg->reads_tail;
        tr_store_job_t *first = *head, *last = first;
        for (int n = 1; n < (writing ? BATCH_MAX : READS_MAX) && last->next != NULL; n++)
            last = last->next;
        *head = last->next;
        if (*head == NULL)
            *tail = NULL;
        last->next = NULL;
        c->jobs = first;
        c->writing = writing;
        c->retries = 0;
        send_unit(c);
    }
}

int tr_pg_submit(tr_pg_t *pg, tr_store_job_t *job)
{
    job->kind = TR_STORE_DONE;
    job->next = NULL;
    if (pg->loop == NULL) {
        run_sync(pg, job);
        job->state = TR_JOB_DONE;
        return TR_FFI_OK;
    }
    if (pg->down) {
        char msg[320];
        snprintf(msg, sizeof(msg), "storage unavailable: PostgreSQL cannot be reached: %s", pg->down_why);
        set_error(job, TR_STORE_UNAVAILABLE, msg);
        job->state = TR_JOB_DONE;
        return TR_FFI_OK;
    }
    tr_wait_park(pg->waits, job->waiter, tr_wait_clock() + TR_STORE_WAIT_SECONDS);
    tr_store_job_t **head = job->read ? &pg->reads_head : &pg->writes_head;
    tr_store_job_t **tail = job->read ? &pg->reads_tail : &pg->writes_tail;
    if (*tail != NULL)
        (*tail)->next = job;
    else
        *head = job;
    *tail = job;
    dispatch(pg);
    return TR_FFI_YIELD;
}

void tr_pg_job_clear(tr_store_job_t *job)
{
    PQclear((PGresult *)job->result);
    job->result = NULL;
}

int tr_pg_is_url(const char *url)
{
    return url != NULL && (strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0);
}

tr_pg_t *tr_pg_open(const char *url, int connections, struct ev_loop *loop, tr_waits_t *waits, tr_stats_t *stats,
                    void (*release)(struct tr_store_job_s *job), char *err, size_t err_size)
{
    tr_pg_t *pg = calloc(1, sizeof(*pg));
    if (pg != NULL && (pg->url = strdup(url)) != NULL)
        pg->conns = calloc(connections > 0 ? (size_t)connections : 1, sizeof(pg_conn_t));
    if (pg == NULL || pg->conns == NULL) {
        if (pg != NULL)
            free(pg->url);
        free(pg);
        snprintf(err, err_size, "out of memory for the PostgreSQL store");
        return NULL;
    }
    pg->loop = loop;
    pg->release = release;
    pg->waits = waits;
    pg->stats = stats;
    pg->nconns = loop != NULL ? (connections > 0 ? connections : 1) : 0;
    for (int i = 0; i < pg->nconns; i++) {
        pg_conn_t *c = &pg->conns[i];
        c->pg = pg;
        c->state = CONN_DOWN;
        ev_init(&c->io, on_io);
        c->io.data = c;
        ev_init(&c->timer, on_timer);
        c->timer.data = c;
        conn_connect(c);
    }
    return pg;
}

void tr_pg_close(tr_pg_t *pg)
{
    if (pg == NULL)
        return;
    for (int i = 0; i < pg->nconns; i++) {
        pg_conn_t *c = &pg->conns[i];
        ev_timer_stop(pg->loop, &c->timer);
        if (ev_is_active(&c->io))
            ev_io_stop(pg->loop, &c->io);
        for (tr_store_job_t *j = c->jobs, *next; j != NULL; j = next) {
            next = j->next;
            set_error(j, TR_STORE_UNAVAILABLE, "storage unavailable: the worker is stopping");
            j->state = TR_JOB_DONE;
        }
        PQfinish(c->conn);
        free(c->expect);
        for (int k = 0; k < STMT_CACHE; k++)
            stmt_free(&c->stmts[k]);
    }
    for (tr_store_job_t *j = pg->writes_head; j != NULL; j = j->next)
        j->state = TR_JOB_DONE;
    for (tr_store_job_t *j = pg->reads_head; j != NULL; j = j->next)
        j->state = TR_JOB_DONE;
    PQfinish(pg->sync_conn);
    free(pg->params.values);
    free(pg->params.types);
    free(pg->params.sig);
    free(pg->params.numbers);
    free(pg->conns);
    free(pg->url);
    free(pg);
}
