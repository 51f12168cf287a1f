/*
 * The store's half of the request API (declared in lua/triage/cdef.h): jobs of the running request,
 * and the worker's read connection. Lua reads through SQLite's own API on that connection (FFI).
 */
#include "ffi_api.h"
#include "sha256.h"
#include "store.h"
#include "store_job.h"

TR_FFI_EXPORT struct sqlite3 *tr_ffi_store_reader(const char **errmsg)
{
    if (tr_ffi_env.store == NULL) {
        *errmsg = "no store in this process";
        return NULL;
    }
    return tr_store_reader(tr_ffi_env.store, errmsg);
}

TR_FFI_EXPORT int tr_ffi_store_engine(void)
{
    return tr_ffi_env.store == NULL ? TR_STORE_NONE : tr_store_engine(tr_ffi_env.store);
}

TR_FFI_EXPORT tr_store_job_t *tr_ffi_store_read_job(const char **errmsg)
{
    if (tr_ffi_env.store == NULL) {
        *errmsg = "no store in this process";
        return NULL;
    }
    /* (the in-process library's store has no loop: a read runs at once there, as SQLite's do) */
    if (tr_ffi_env.running == NULL && !tr_store_synchronous(tr_ffi_env.store)) {
        *errmsg = "reads of a PostgreSQL store happen inside a request";
        return NULL;
    }
    tr_store_job_t *job = tr_store_job_new(tr_ffi_env.store, tr_ffi_env.running ? &tr_ffi_env.running->wait : NULL);
    job->read = 1;
    return job;
}

TR_FFI_EXPORT void tr_ffi_store_audited(tr_store_job_t *job)
{
    job->audited = 1;
}

TR_FFI_EXPORT struct pg_result *tr_ffi_store_rows(tr_store_job_t *job)
{
    return job->result;
}

TR_FFI_EXPORT tr_store_job_t *tr_ffi_store_job(const char **errmsg)
{
    if (tr_ffi_env.store == NULL) {
        *errmsg = "no store in this process";
        return NULL;
    }
    if (tr_ffi_env.running == NULL) {
        *errmsg = "writes happen inside a request";
        return NULL;
    }
    return tr_store_job_new(tr_ffi_env.store, &tr_ffi_env.running->wait);
}

TR_FFI_EXPORT int tr_ffi_store_add(tr_store_job_t *job, const char *sql, size_t len)
{
    return tr_store_job_add(job, sql, len);
}

TR_FFI_EXPORT int tr_ffi_store_bind(tr_store_job_t *job, int type, int64_t i, double d, const char *s, size_t len)
{
    return tr_store_job_bind(job, type, i, d, s, len);
}

TR_FFI_EXPORT int tr_ffi_store_submit(tr_store_job_t *job, const char **errmsg)
{
    return tr_store_job_submit(job, errmsg);
}

TR_FFI_EXPORT int tr_ffi_store_result(tr_store_job_t *job, const char **errmsg)
{
    return tr_store_job_result(job, errmsg);
}

TR_FFI_EXPORT int64_t tr_ffi_store_changes(tr_store_job_t *job, int i)
{
    return tr_store_job_changes(job, i);
}

TR_FFI_EXPORT int64_t tr_ffi_store_rowid(tr_store_job_t *job, int i)
{
    return tr_store_job_rowid(job, i);
}

TR_FFI_EXPORT void tr_ffi_store_release(tr_store_job_t *job)
{
    tr_store_job_release(job);
}

TR_FFI_EXPORT void tr_ffi_sha256_hex(const char *data, size_t len, char *out)
{
    tr_sha256_hex(data, len, out);
}
