/*
 * The embedded store: migrations (master), the writer thread with group commit, jobs, the read
 * connection, backup. See store.h.
 */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit.h"
#include "log.h"
#include "migrations.h"
#include "pg.h"
#include "store_job.h"

#define BATCH_MAX 1024       /* jobs in one commit at most */
#define WRITER_CACHE 32      /* prepared statements the writer keeps */
#define BUSY_TIMEOUT_MS 5000 /* how long a writer waits for another worker's commit */
#define READ_BUSY_TIMEOUT_MS 100
#define JOBS_AHEAD 64 /* jobs (with their buffers) made at open: that many writes in flight cost no allocation */

typedef struct cached_stmt_s {
    char *sql;
    size_t len;
    sqlite3_stmt *stmt;
    uint64_t used; /* for eviction: the least recently used goes */
} cached_stmt_t;

struct tr_store_s {
    char path[4096];
    tr_pg_t *pg;          /* --store postgres://...: the engine is PostgreSQL (pg.h), and nothing below is used */
    struct ev_loop *loop; /* NULL: synchronous */
    tr_waits_t *waits;
    tr_stats_t *stats;
    tr_store_lock_t *write_lock; /* the workers' (shared.h); NULL: the only writer */
    tr_pool_t job_pool;
    tr_bufpool_t bufs;
    sqlite3 *reader; /* loop thread */
    char reader_err[256];
    /* The writer thread's. */
    sqlite3 *writer;
    cached_stmt_t cache[WRITER_CACHE];
    uint64_t cache_clock;
    pthread_t thread;
    int thread_started;
    /* Shared between the loop and the writer, under lock. */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    tr_store_job_t *queue_head, *queue_tail;
    tr_store_job_t *done_head;
    int stopping;
    ev_async done_async;
};

/* ---- opening ---- */

static void db_path(const char *data_dir, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%s", data_dir, TR_STORE_FILE);
}

/* Open path read-write (creating it) with the store's settings. */
static sqlite3 *open_db(const char *path, int flags, int busy_ms, char *err, size_t err_size)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, flags | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, err_size, "cannot open %s: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, busy_ms);
    sqlite3_extended_result_codes(db, 1);
    char *msg = NULL;
    const char *setup = (flags & SQLITE_OPEN_READWRITE)
                            ? "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;"
                            : "PRAGMA foreign_keys=ON;";
    if (sqlite3_exec(db, setup, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, err_size, "%s: %s", path, msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        sqlite3_close(db);
        return NULL;
    }
    return db;
}

/* ---- migrations ---- */

/* triage_app_file('data/protocols.json'): the text of a file of the application (migrations only). */
static void sql_app_file(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    const char *app_dir = sqlite3_user_data(ctx);
    const char *rel = (const char *)sqlite3_value_text(argv[0]);
    (void)argc;
    if (rel == NULL || rel[0] == '/' || strstr(rel, "..") != NULL) {
        sqlite3_result_error(ctx, "triage_app_file: a path inside the application, like 'data/x.json'", -1);
        return;
    }
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", app_dir, rel);
    size_t len;
    char *data = tr_migrations_read_file(path, &len);
    if (data == NULL) {
        char msg[4200];
        snprintf(msg, sizeof(msg), "triage_app_file: cannot read %s: %s", rel, strerror(errno));
        sqlite3_result_error(ctx, msg, -1);
        return;
    }
    sqlite3_result_text(ctx, data, (int)len, free);
}

static int already_applied(sqlite3 *db, long version)
{
    sqlite3_stmt *q;
    int found = 0;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM triage_migrations WHERE version = ?", -1, &q, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(q, 1, version);
        found = sqlite3_step(q) == SQLITE_ROW;
        sqlite3_finalize(q);
    }
    return found;
}

/* Apply one migration file in its own transaction. Returns 0, or -1 with err (rolled back). */
static int apply(sqlite3 *db, const char *dir, const char *name, long version, char *err, size_t err_size)
{
    char path[4096 + 256 + 2]; /* dir, '/', a file name */
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    size_t len;
    char *sql = tr_migrations_read_file(path, &len);
    if (sql == NULL) {
        snprintf(err, err_size, "migrations/%s: cannot read: %s", name, strerror(errno));
        return -1;
    }
    char *msg = NULL;
    int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, &msg);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc == SQLITE_OK) {
        sqlite3_stmt *ins;
        rc = sqlite3_prepare_v2(db,
                                "INSERT INTO triage_migrations(version, name, applied_at) "
                                "VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ','now'))",
                                -1, &ins, NULL);
        if (rc == SQLITE_OK) {
            sqlite3_bind_int64(ins, 1, version);
            sqlite3_bind_text(ins, 2, name, -1, SQLITE_TRANSIENT);
            rc = sqlite3_step(ins) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
            sqlite3_finalize(ins);
        }
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "COMMIT", NULL, NULL, &msg);
    free(sql);
    if (rc != SQLITE_OK) {
        snprintf(err, err_size, "migrations/%s: %s", name, msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return 0;
}

typedef struct migrate_run_s {
    sqlite3 *db;
    int applied;
} migrate_run_t;

static int migrate_one(void *arg, const char *dir, const char *name, long version, char *err, size_t err_size)
{
    migrate_run_t *run = arg;
    if (already_applied(run->db, version))
        return 0;
    if (apply(run->db, dir, name, version, err, err_size) != 0)
        return -1;
    run->applied++;
    return 0;
}

int tr_store_migrate(const char *data_dir, const char *app_dir, char *err, size_t err_size)
{
    if (mkdir(data_dir, 0750) != 0 && errno != EEXIST) {
        snprintf(err, err_size, "cannot create the data directory %s: %s", data_dir, strerror(errno));
        return -1;
    }
    char path[4096];
    db_path(data_dir, path, sizeof(path));
    sqlite3 *db = open_db(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, BUSY_TIMEOUT_MS, err, err_size);
    if (db == NULL)
        return -1;
    sqlite3_create_function(db, "triage_app_file", 1, SQLITE_UTF8, (void *)app_dir, sql_app_file, NULL, NULL);
    char *msg = NULL;
    if (sqlite3_exec(db,
                     "CREATE TABLE IF NOT EXISTS triage_migrations ("
                     " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
                     NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, err_size, "%s: %s", path, msg);
        sqlite3_free(msg);
        sqlite3_close(db);
        return -1;
    }
    migrate_run_t run = {.db = db, .applied = 0};
    int rc = tr_migrations_each(app_dir, migrate_one, &run, err, err_size);
    sqlite3_close(db);
    return rc == 0 ? run.applied : -1;
}

/* ---- the writer ---- */

static sqlite3_stmt *writer_statement(tr_store_t *st, const char *sql, size_t len)
{
    cached_stmt_t *victim = &st->cache[0];
    for (int i = 0; i < WRITER_CACHE; i++) {
        cached_stmt_t *c = &st->cache[i];
        if (c->stmt != NULL && c->len == len && memcmp(c->sql, sql, len) == 0) {
            c->used = ++st->cache_clock;
            return c->stmt;
        }
        if (c->stmt == NULL || c->used < victim->used)
            victim = c;
    }
    sqlite3_stmt *stmt;
    if (sqlite3_prepare_v3(st->writer, sql, (int)len, SQLITE_PREPARE_PERSISTENT, &stmt, NULL) != SQLITE_OK)
        return NULL;
    if (victim->stmt != NULL) {
        sqlite3_finalize(victim->stmt);
        free(victim->sql);
    }
    victim->sql = malloc(len); /* the writer thread's own memory: not counted with the loop's */
    if (victim->sql == NULL) {
        sqlite3_finalize(stmt);
        victim->stmt = NULL;
        return NULL;
    }
    memcpy(victim->sql, sql, len);
    victim->len = len;
    victim->stmt = stmt;
    victim->used = ++st->cache_clock;
    return stmt;
}

static void writer_close(tr_store_t *st)
{
    for (int i = 0; i < WRITER_CACHE; i++) {
        if (st->cache[i].stmt != NULL) {
            sqlite3_finalize(st->cache[i].stmt);
            free(st->cache[i].sql);
        }
        memset(&st->cache[i], 0, sizeof(st->cache[i]));
    }
    sqlite3_close(st->writer);
    st->writer = NULL;
}

static void fail_job(tr_store_job_t *job, int kind, const char *msg)
{
    job->kind = kind;
    snprintf(job->errmsg, sizeof(job->errmsg), "%s", msg);
}

/* The SQLite result codes that mean the storage, not the statement, failed. */
static int storage_failure(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_NOMEM:
    case SQLITE_READONLY:
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_PROTOCOL: return 1;
    default: return 0;
    }
}

/* Run the statements of job (inside the batch's transaction). Returns the SQLite code of a failure,
 * SQLITE_OK. */
static int run_job(tr_store_t *st, tr_store_job_t *job)
{
    const char *p = job->stmts.data, *end = p + job->stmts.len;
    for (int k = 0; p < end; k++) {
        uint32_t sql_len = tr_store_job_u32(&p);
        const char *sql = p;
        p += sql_len + 1; /* and its NUL */
        uint32_t nparams = tr_store_job_u32(&p);
        sqlite3_stmt *stmt = writer_statement(st, sql, sql_len);
        if (stmt == NULL)
            return sqlite3_errcode(st->writer) != SQLITE_OK ? sqlite3_errcode(st->writer) : SQLITE_ERROR;
        for (uint32_t i = 1; i <= nparams; i++) {
            int type = (unsigned char)*p++;
            if (type == TR_STORE_INT) {
                int64_t v;
                memcpy(&v, p, 8);
                p += 8;
                sqlite3_bind_int64(stmt, (int)i, v);
            } else if (type == TR_STORE_DOUBLE) {
                double v;
                memcpy(&v, p, 8);
                p += 8;
                sqlite3_bind_double(stmt, (int)i, v);
            } else if (type == TR_STORE_TEXT) {
                uint32_t len = tr_store_job_u32(&p);
                sqlite3_bind_text(stmt, (int)i, p, (int)len, SQLITE_STATIC);
                p += len + 1;
            } else {
                sqlite3_bind_null(stmt, (int)i);
            }
        }
        int rc;
        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        }
        sqlite3_reset(stmt);
        sqlite3_clear_bindings(stmt);
        if (rc != SQLITE_DONE)
            return rc;
        job->changes[k] = sqlite3_changes64(st->writer);
        job->rowid[k] = sqlite3_last_insert_rowid(st->writer);
    }
    return SQLITE_OK;
}

static void fail_batch(tr_store_job_t *batch, const char *why)
{
    for (tr_store_job_t *j = batch; j != NULL; j = j->next)
        if (j->kind == TR_STORE_DONE)
            fail_job(j, TR_STORE_UNAVAILABLE, why);
}

/* Take the workers' write lock (no lock: a single writer). A holder that died left it to us. */
static void lock_take(tr_store_lock_t *l)
{
    if (l == NULL)
        return;
    __atomic_add_fetch(&l->waiting, 1, __ATOMIC_SEQ_CST);
    int rc = pthread_mutex_lock(&l->mutex);
    __atomic_sub_fetch(&l->waiting, 1, __ATOMIC_SEQ_CST);
    if (rc == EOWNERDEAD) {
        /* SQLite rolled back its transaction (its file locks went with the process). */
        pthread_mutex_consistent(&l->mutex);
        tr_log_error("store: a worker died while committing; its uncommitted writes were never acknowledged");
    }
    __atomic_add_fetch(&l->turns, 1, __ATOMIC_SEQ_CST);
}

/* Release it; when another writer waits, let it take the lock before this one can again (a mutex is
 * not fair: the releasing thread, already running, would win the next round every time). */
static void lock_give(tr_store_lock_t *l)
{
    if (l == NULL)
        return;
    uint32_t turn = __atomic_load_n(&l->turns, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&l->mutex);
    for (int i = 0; i < 1000 && __atomic_load_n(&l->waiting, __ATOMIC_SEQ_CST) > 0 &&
                    __atomic_load_n(&l->turns, __ATOMIC_SEQ_CST) == turn;
         i++)
        sched_yield(); /* bounded: a waiter that cannot run soon does not stall this writer for long */
}

/*
 * One group commit: every job of the batch in a savepoint of its own inside one transaction, then
 * one COMMIT. A job refused by a constraint or a wrong statement is rolled back alone; a storage
 * failure fails the whole batch, and the connection is reopened for the next one (SQLite may leave a
 * connection that saw an I/O error unusable).
 */
static void run_batch(tr_store_t *st, tr_store_job_t *batch)
{
    char why[300];
    for (tr_store_job_t *j = batch; j != NULL; j = j->next)
        j->kind = TR_STORE_DONE;
    if (st->writer == NULL) {
        st->writer = open_db(st->path, SQLITE_OPEN_READWRITE, BUSY_TIMEOUT_MS, why, sizeof(why));
        /* tx:audit's INSERT hashes its entry with triage_audit_hash (audit.h), on this connection. */
        if (st->writer != NULL && tr_audit_register(st->writer) != 0) {
            snprintf(why, sizeof(why), "cannot add triage_audit_hash: %s", sqlite3_errmsg(st->writer));
            writer_close(st);
        }
        if (st->writer == NULL) {
            tr_log_error("store: %s", why);
            fail_batch(batch, why);
            return;
        }
    }
    sqlite3 *db = st->writer;
    lock_take(st->write_lock);
    int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    int committed_jobs = 0;
    for (tr_store_job_t *j = batch; j != NULL && rc == SQLITE_OK; j = j->next) {
        sqlite3_exec(db, "SAVEPOINT job", NULL, NULL, NULL);
        int jrc = run_job(st, j);
        if (jrc == SQLITE_OK) {
            sqlite3_exec(db, "RELEASE job", NULL, NULL, NULL);
            committed_jobs++;
            continue;
        }
        if (storage_failure(jrc)) {
            rc = jrc; /* the whole batch goes */
            break;
        }
        fail_job(j, (jrc & 0xff) == SQLITE_CONSTRAINT ? TR_STORE_CONSTRAINT : TR_STORE_SQL_ERROR, sqlite3_errmsg(db));
        sqlite3_exec(db, "ROLLBACK TO job", NULL, NULL, NULL);
        sqlite3_exec(db, "RELEASE job", NULL, NULL, NULL);
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        snprintf(why, sizeof(why), "storage unavailable: %s", sqlite3_errmsg(db));
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL); /* (a failed COMMIT may have rolled back already) */
    }
    lock_give(st->write_lock);
    if (rc != SQLITE_OK) {
        tr_log_error("store: commit of %d writes failed: %s", committed_jobs, why);
        fail_batch(batch, why);
        /* Keep the connection. Closing it could let SQLite checkpoint and reset the WAL index, and the
         * recovery that follows would find the frames this failed commit wrote (complete, checksums
         * valid) and count them as committed: a submission answered 503 would appear stored. Kept,
         * the next commit writes over them. Reopen only a connection stuck in its transaction. */
        if (!sqlite3_get_autocommit(db))
            writer_close(st);
        return;
    }
    if (st->stats != NULL) {
        st->stats->store_commits++;
        st->stats->store_writes += (uint64_t)committed_jobs;
    }
}

static void *writer_main(void *arg)
{
    tr_store_t *st = arg;
    pthread_mutex_lock(&st->lock);
    for (;;) {
        while (st->queue_head == NULL && !st->stopping)
            pthread_cond_wait(&st->wake, &st->lock);
        if (st->queue_head == NULL)
            break; /* stopping, and everything queued is done */
        /* Take what is queued (up to BATCH_MAX): requests that arrive meanwhile go into the next commit. */
        tr_store_job_t *batch = st->queue_head, *last = batch;
        for (int n = 1; n < BATCH_MAX && last->next != NULL; n++)
            last = last->next;
        st->queue_head = last->next;
        if (st->queue_head == NULL)
            st->queue_tail = NULL;
        last->next = NULL;
        pthread_mutex_unlock(&st->lock);

        run_batch(st, batch);

        pthread_mutex_lock(&st->lock);
        last->next = st->done_head;
        st->done_head = batch;
        ev_async_send(st->loop, &st->done_async);
    }
    pthread_mutex_unlock(&st->lock);
    return NULL;
}

/* On the loop: resume the requests whose jobs are done (from the loop, via core/wait.c). */
static void on_done(struct ev_loop *loop, ev_async *a, int revents)
{
    tr_store_t *st = a->data;
    (void)loop, (void)revents;
    pthread_mutex_lock(&st->lock);
    tr_store_job_t *j = st->done_head;
    st->done_head = NULL;
    pthread_mutex_unlock(&st->lock);
    while (j != NULL) {
        tr_store_job_t *next = j->next;
        j->state = TR_JOB_DONE;
        j->next = NULL;
        if (j->abandoned)
            tr_store_job_release(j);
        else
            tr_wait_wake(st->waits, j->waiter, j->kind);
        j = next;
    }
}

/* ---- the store ---- */

tr_store_t *tr_store_open(const tr_store_config_t *cfg, struct ev_loop *loop, tr_waits_t *waits, tr_stats_t *stats,
                          tr_store_lock_t *lock, char *err, size_t err_size)
{
    tr_store_t *st = tr_mem_alloc(sizeof(*st));
    memset(st, 0, sizeof(*st));
    db_path(cfg->data_dir, st->path, sizeof(st->path));
    st->loop = loop;
    st->waits = waits;
    st->stats = stats;
    st->write_lock = lock;
    tr_pool_init(&st->job_pool, sizeof(tr_store_job_t));
    tr_store_job_t *ahead[JOBS_AHEAD];
    for (int i = 0; i < JOBS_AHEAD; i++) {
        ahead[i] = tr_store_job_new(st, NULL);
        tr_buf_reserve(&st->bufs, &ahead[i]->stmts, 1);
    }
    for (int i = 0; i < JOBS_AHEAD; i++)
        tr_pool_put(&st->job_pool, ahead[i]);
    pthread_mutex_init(&st->lock, NULL);
    pthread_cond_init(&st->wake, NULL);
    if (cfg->url != NULL) {
        st->pg = tr_pg_open(cfg->url, cfg->connections, loop, waits, stats, tr_store_job_release, err, err_size);
        if (st->pg == NULL) {
            tr_store_close(st);
            return NULL;
        }
        return st;
    }
    /* The connections open on first use, and again after a failure: a store that cannot be opened
     * now (a full disk, a missing mount) serves again by itself once it can. */
    if (loop != NULL) {
        ev_async_init(&st->done_async, on_done);
        st->done_async.data = st;
        ev_async_start(loop, &st->done_async);
        int rc = pthread_create(&st->thread, NULL, writer_main, st);
        if (rc != 0) {
            snprintf(err, err_size, "cannot start the store's writer thread: %s", strerror(rc));
            ev_async_stop(loop, &st->done_async);
            tr_mem_free(st);
            return NULL;
        }
        st->thread_started = 1;
    }
    return st;
}

void tr_store_close(tr_store_t *st)
{
    if (st == NULL)
        return;
    tr_pg_close(st->pg);
    if (st->thread_started) {
        pthread_mutex_lock(&st->lock);
        st->stopping = 1;
        pthread_cond_signal(&st->wake);
        pthread_mutex_unlock(&st->lock);
        pthread_join(st->thread, NULL);
        on_done(st->loop, &st->done_async, 0);
        ev_async_stop(st->loop, &st->done_async);
    }
    writer_close(st);
    sqlite3_close_v2(st->reader); /* closes once Lua's prepared statements are finalized */
    /* Pooled jobs keep their statement buffers: give those back before the pools go. */
    tr_store_job_t *free_jobs = NULL;
    while (st->job_pool.nfree > 0) {
        tr_store_job_t *j = tr_pool_get(&st->job_pool);
        tr_buf_release(&st->bufs, &j->stmts);
        j->next = free_jobs;
        free_jobs = j;
    }
    while (free_jobs != NULL) {
        tr_store_job_t *next = free_jobs->next;
        tr_pool_put(&st->job_pool, free_jobs);
        free_jobs = next;
    }
    tr_bufpool_destroy(&st->bufs);
    tr_pool_destroy(&st->job_pool);
    pthread_mutex_destroy(&st->lock);
    pthread_cond_destroy(&st->wake);
    tr_mem_free(st);
}

int tr_store_engine(const tr_store_t *st)
{
    return st->pg != NULL ? TR_STORE_POSTGRES : TR_STORE_SQLITE;
}

int tr_store_synchronous(const tr_store_t *st)
{
    return st->loop == NULL;
}

struct sqlite3 *tr_store_reader(tr_store_t *st, const char **errmsg)
{
    if (st->pg != NULL) {
        *errmsg = "the store is PostgreSQL: reads are jobs";
        return NULL;
    }
    if (st->reader == NULL) {
        st->reader =
            open_db(st->path, SQLITE_OPEN_READONLY, READ_BUSY_TIMEOUT_MS, st->reader_err, sizeof(st->reader_err));
        if (st->reader == NULL) {
            tr_log_error("store: %s", st->reader_err);
            *errmsg = st->reader_err;
            return NULL;
        }
    }
    return st->reader;
}

/* ---- jobs (loop thread) ---- */

tr_store_job_t *tr_store_job_new(tr_store_t *st, tr_waiter_t *waiter)
{
    tr_store_job_t *job = tr_pool_get(&st->job_pool);
    tr_buf_t stmts = job->stmts; /* a pooled job keeps its buffer */
    memset(job, 0, offsetof(tr_store_job_t, changes));
    job->stmts = stmts;
    job->stmts.len = 0;
    job->st = st;
    job->waiter = waiter;
    job->state = TR_JOB_BUILDING;
    job->next = NULL;
    return job;
}

static int append(tr_store_job_t *job, const void *data, size_t len)
{
    if (tr_buf_reserve(&job->st->bufs, &job->stmts, len) != 0)
        return -1;
    memcpy(job->stmts.data + job->stmts.len, data, len);
    job->stmts.len += len;
    return 0;
}

int tr_store_job_add(tr_store_job_t *job, const char *sql, size_t len)
{
    if (job->state != TR_JOB_BUILDING || job->nstmts == TR_STORE_JOB_STATEMENTS || len > UINT32_MAX)
        return TR_FFI_ERROR;
    uint32_t l = (uint32_t)len, zero = 0;
    if (append(job, &l, 4) != 0 || append(job, sql, len) != 0 || append(job, "", 1) != 0)
        return TR_FFI_ERROR;
    job->nparams_at = job->stmts.len;
    if (append(job, &zero, 4) != 0)
        return TR_FFI_ERROR;
    job->nstmts++;
    return TR_FFI_OK;
}

int tr_store_job_bind(tr_store_job_t *job, int type, int64_t i, double d, const char *s, size_t len)
{
    if (job->state != TR_JOB_BUILDING || job->nstmts == 0 || len > UINT32_MAX)
        return TR_FFI_ERROR;
    unsigned char t = (unsigned char)type;
    int rc = append(job, &t, 1);
    if (type == TR_STORE_INT)
        rc |= append(job, &i, 8);
    else if (type == TR_STORE_DOUBLE)
        rc |= append(job, &d, 8);
    else if (type == TR_STORE_TEXT) {
        uint32_t l = (uint32_t)len;
        rc |= append(job, &l, 4);
        rc |= append(job, s, len);
        rc |= append(job, "", 1);
    } else if (type != TR_STORE_NULL)
        return TR_FFI_ERROR;
    if (rc != 0)
        return TR_FFI_ERROR;
    uint32_t n;
    memcpy(&n, job->stmts.data + job->nparams_at, 4);
    n++;
    memcpy(job->stmts.data + job->nparams_at, &n, 4);
    return TR_FFI_OK;
}

int tr_store_job_submit(tr_store_job_t *job, const char **errmsg)
{
    tr_store_t *st = job->st;
    if (job->state != TR_JOB_BUILDING || job->nstmts == 0) {
        *errmsg = "a store job needs at least one statement, and is submitted once";
        return TR_FFI_ERROR;
    }
    job->state = TR_JOB_QUEUED;
    if (st->pg != NULL)
        return tr_pg_submit(st->pg, job);
    if (st->loop == NULL) {
        run_batch(st, job);
        job->state = TR_JOB_DONE;
        return TR_FFI_OK;
    }
    tr_wait_park(st->waits, job->waiter, tr_wait_clock() + TR_STORE_WAIT_SECONDS);
    pthread_mutex_lock(&st->lock);
    job->next = NULL;
    if (st->queue_tail != NULL)
        st->queue_tail->next = job;
    else
        st->queue_head = job;
    st->queue_tail = job;
    pthread_cond_signal(&st->wake);
    pthread_mutex_unlock(&st->lock);
    return TR_FFI_YIELD;
}

int tr_store_job_result(tr_store_job_t *job, const char **errmsg)
{
    if (job->state != TR_JOB_DONE) {
        /* Its request stopped waiting (TR_STORE_WAIT_SECONDS): the writer still has it. Whether it
         * is committed is unknown to the client, which retries with its idempotency key. */
        job->abandoned = 1;
        *errmsg = "storage unavailable: no answer from the disk in time";
        return TR_STORE_UNAVAILABLE;
    }
    if (job->kind != TR_STORE_DONE)
        *errmsg = job->errmsg;
    return job->kind;
}

int64_t tr_store_job_changes(const tr_store_job_t *job, int i)
{
    return job->state == TR_JOB_DONE && i >= 0 && i < job->nstmts ? job->changes[i] : 0;
}

int64_t tr_store_job_rowid(const tr_store_job_t *job, int i)
{
    return job->state == TR_JOB_DONE && i >= 0 && i < job->nstmts ? job->rowid[i] : 0;
}

void tr_store_job_release(tr_store_job_t *job)
{
    if (job->state == TR_JOB_QUEUED) {
        job->abandoned = 1; /* on_done gives it back */
        return;
    }
    if (job->result != NULL)
        tr_pg_job_clear(job);
    /* The pooled job keeps its buffer: none of this request's values stay in it. */
    if (job->stmts.data != NULL)
        memset(job->stmts.data, 0, job->stmts.len);
    job->stmts.len = 0;
    tr_pool_put(&job->st->job_pool, job);
}

/* ---- backup ---- */

int tr_store_backup(const char *data_dir, const char *dest, char *err, size_t err_size)
{
    char path[4096];
    db_path(data_dir, path, sizeof(path));
    sqlite3 *src = open_db(path, SQLITE_OPEN_READONLY, BUSY_TIMEOUT_MS, err, err_size);
    if (src == NULL)
        return -1;
    sqlite3 *dst = NULL;
    int rc = sqlite3_open_v2(dest, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    sqlite3_backup *b = rc == SQLITE_OK ? sqlite3_backup_init(dst, "main", src, "main") : NULL;
    if (b == NULL) {
        snprintf(err, err_size, "cannot write %s: %s", dest, dst ? sqlite3_errmsg(dst) : sqlite3_errstr(rc));
        sqlite3_close(dst);
        sqlite3_close(src);
        return -1;
    }
    /* All pages in one step: the copy is one consistent snapshot, taken under a read transaction that
     * never blocks the server's writers (WAL). */
    rc = sqlite3_backup_step(b, -1);
    sqlite3_backup_finish(b);
    if (rc != SQLITE_DONE) {
        snprintf(err, err_size, "backup to %s failed: %s", dest, sqlite3_errmsg(dst));
        sqlite3_close(dst);
        sqlite3_close(src);
        return -1;
    }
    sqlite3_exec(dst, "PRAGMA journal_mode=DELETE", NULL, NULL, NULL); /* one self-contained file */
    sqlite3_close(dst);
    sqlite3_close(src);
    return 0;
}
