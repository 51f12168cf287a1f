/*
 * The C functions the Lua half of triage calls through the LuaJIT FFI.
 *
 * This file is read twice: the C core includes it (core/ffi_api.h) and triage/ffi.lua passes its text
 * to ffi.cdef, so both sides always agree. It must therefore hold plain declarations only: no
 * preprocessor lines other than this comment's file, no macros, no inline code.
 *
 * Conventions: every request call takes the request and the serial the ctx was made with; a stale
 * serial (the request has finished and its context was reused) makes the call fail (NULL, or
 * TR_FFI_STALE) without touching the request. Returned pointers are valid until the request
 * finishes; Lua copies them into strings at once (ffi.string) and never keeps them.
 *
 * Calls that return an int status return one of the codes below. A call that can fail for more
 * than one reason also takes `const char **errmsg`: on TR_FFI_ERROR it points *errmsg at a static
 * NUL-terminated message saying why, which Lua raises as is (never freed, never overwritten).
 */
typedef struct tr_router_s tr_router_t;

enum {
    TR_FFI_OK = 0,     /* done */
    TR_FFI_YIELD = 1,  /* the running request is parked: Lua yields now and is resumed when it is done */
    TR_FFI_ERROR = -1, /* refused or failed; *errmsg says why */
    TR_FFI_STALE = -2  /* the ctx outlived its request: nothing was read or changed */
};

typedef struct tr_req_pub_s {
    uint32_t serial;   /* changes every time the request context is taken from or put back in its pool */
    int32_t handler;   /* route handler index, -1 no route matched (404), -2 other methods only (405) */
    int32_t status;    /* response status, 200 until set */
    int32_t method;    /* http_parser method number; names from tr_ffi_method_name */
    uint32_t flags;    /* response options set from Lua: 1 add X-Request-Id, 2 the body is JSON */
    uint32_t reserved;
} tr_req_pub_t;

const char *tr_ffi_method_name(int method);
tr_req_pub_t *tr_ffi_req_running(void);

const char *tr_ffi_req_path(tr_req_pub_t *r, uint32_t serial, size_t *len);
const char *tr_ffi_req_query_string(tr_req_pub_t *r, uint32_t serial, size_t *len);
const char *tr_ffi_req_query(tr_req_pub_t *r, uint32_t serial, const char *name, size_t name_len, size_t *len);
const char *tr_ffi_req_param(tr_req_pub_t *r, uint32_t serial, const char *name, size_t name_len, size_t *len);
const char *tr_ffi_req_header(tr_req_pub_t *r, uint32_t serial, const char *name, size_t name_len, size_t *len);
int tr_ffi_req_header_count(tr_req_pub_t *r, uint32_t serial);
const char *tr_ffi_req_header_at(tr_req_pub_t *r, uint32_t serial, int i, size_t *name_len, const char **value, size_t *value_len);
const char *tr_ffi_req_body(tr_req_pub_t *r, uint32_t serial, size_t *len);
const char *tr_ffi_req_allow(tr_req_pub_t *r, uint32_t serial, size_t *len);
/* 1 if the watchdog stopped this request past --handler-timeout (its error is the timeout's). */
int tr_ffi_req_stopped(tr_req_pub_t *r, uint32_t serial);
/* Writes the request id (no NUL, at most 128 bytes) and returns its length (> 0), or TR_FFI_STALE,
 * or TR_FFI_ERROR if it does not fit in size. */
int tr_ffi_req_id(tr_req_pub_t *r, uint32_t serial, char *buf, size_t size);

/* Add a response header line. TR_FFI_ERROR when the name is not a token, the value holds CR, LF or
 * NUL (response splitting), the server sets that header itself (Content-Length, Transfer-Encoding,
 * Connection, Date), the header lines would pass TR_RESP_HEADERS_MAX (64 KiB), or there is no
 * memory for them; *errmsg tells which. */
int tr_ffi_resp_header(tr_req_pub_t *r, uint32_t serial, const char *name, size_t name_len, const char *value, size_t value_len, const char **errmsg);
/* Forget the header lines set so far (before an error response). TR_FFI_OK or TR_FFI_STALE. */
int tr_ffi_resp_reset(tr_req_pub_t *r, uint32_t serial);
/* Serialize the response (status, headers, body); the request is finished after it. TR_FFI_OK or
 * TR_FFI_STALE. */
int tr_ffi_resp_finish(tr_req_pub_t *r, uint32_t serial, const char *body, size_t len);

/* Park the running request for seconds (<= 0: until the loop's next turn); Lua yields right after.
 * TR_FFI_ERROR when no request is running or this process has no event loop. */
int tr_ffi_sleep(double seconds, const char **errmsg);
double tr_ffi_now(void);
void tr_ffi_log_error(const char *msg, size_t len);
int tr_ffi_worker_slot(void);

/* The store (core/store.h). A job is a list of statements run in one transaction (all or nothing),
 * grouped with other requests' jobs into one commit. Add a statement, then bind its parameters in
 * order; submit parks the running request until the job is committed (TR_FFI_YIELD) or runs it at
 * once where there is no event loop (TR_FFI_OK); then read the result and release the job. */
typedef struct tr_store_job_s tr_store_job_t;
struct sqlite3;

/* tr_ffi_store_result kinds */
enum {
    TR_STORE_DONE = 0,        /* committed */
    TR_STORE_CONSTRAINT = 1,  /* a constraint refused a statement: nothing of the job was stored */
    TR_STORE_UNAVAILABLE = 2, /* the storage failed (I/O, full disk, cannot open, locked too long): nothing stored */
    TR_STORE_SQL_ERROR = 3    /* a statement is wrong (syntax, unknown table): nothing stored */
};
/* tr_ffi_store_bind types */
enum { TR_STORE_NULL = 0, TR_STORE_INT = 1, TR_STORE_DOUBLE = 2, TR_STORE_TEXT = 3 };
/* tr_ffi_store_engine */
enum { TR_STORE_NONE = 0, TR_STORE_SQLITE = 1, TR_STORE_POSTGRES = 2 };
struct pg_result;

/* Which engine the store of this process runs on. */
int tr_ffi_store_engine(void);
/* SQLite: the worker's read connection, or NULL with *errmsg (no store, or it cannot be opened). */
struct sqlite3 *tr_ffi_store_reader(const char **errmsg);
/* PostgreSQL: reads are jobs of one statement (add, bind, submit as for a write); the rows are then
 * the job's PGresult (libpq), valid until release. NULL with *errmsg outside a request. */
tr_store_job_t *tr_ffi_store_read_job(const char **errmsg);
struct pg_result *tr_ffi_store_rows(tr_store_job_t *job);
/* The job appends to the audit trail (tx:audit): on PostgreSQL its group takes the audit lock first. */
void tr_ffi_store_audited(tr_store_job_t *job);
/* A new job for the running request, or NULL with *errmsg. */
tr_store_job_t *tr_ffi_store_job(const char **errmsg);
/* TR_FFI_OK, or TR_FFI_ERROR when the job is full (TR_STORE_JOB_STATEMENTS) or out of memory. */
int tr_ffi_store_add(tr_store_job_t *job, const char *sql, size_t len);
int tr_ffi_store_bind(tr_store_job_t *job, int type, int64_t i, double d, const char *s, size_t len);
int tr_ffi_store_submit(tr_store_job_t *job, const char **errmsg);
/* After the resume: a TR_STORE_* kind, with *errmsg for all but TR_STORE_DONE (valid until release). */
int tr_ffi_store_result(tr_store_job_t *job, const char **errmsg);
/* Rows changed by, and the last inserted rowid after, statement i (0-based) of a committed job
 * (PostgreSQL: the first column of the first row the statement returned, e.g. INSERT ... RETURNING). */
int64_t tr_ffi_store_changes(tr_store_job_t *job, int i);
int64_t tr_ffi_store_rowid(tr_store_job_t *job, int i);
void tr_ffi_store_release(tr_store_job_t *job);

/* SHA-256 of data as 64 lower-case hex digits and a NUL, written at out (65 bytes). */
void tr_ffi_sha256_hex(const char *data, size_t len, char *out);

/* Strict JSON (RFC 8259) for request bodies, the part lua-cjson does not check (core/json_check.h):
 * invalid UTF-8, unpaired \u surrogates, control characters in strings, NaN and Infinity, hex
 * numbers, a leading '+' or zeros, numbers outside the grammar or overflowing a double. TR_FFI_OK,
 * or TR_FFI_ERROR with *errmsg naming the problem and *at the byte where it starts (from 1). */
int tr_ffi_json_check(const char *s, size_t len, size_t *at, const char **errmsg);

/* Bearer tokens (core/jwt.h): HS256 JWTs checked against the keys the master read (--token-keys),
 * which Lua never sees. tr_ffi_auth_verify returns TR_AUTH_OK with the decoded payload (JSON) at
 * payload (size bytes, at least 4097) and its length at *payload_len, or another TR_AUTH_* code with
 * *errmsg saying why. exp and nbf are checked against tr_ffi_now() with the configured skew. */
enum {
    TR_AUTH_OK = 0,
    TR_AUTH_MALFORMED = -1,     /* not a JWT, bad base64url, header or payload not an object, no exp */
    TR_AUTH_BAD_ALG = -2,       /* alg is not HS256 ("none" included) */
    TR_AUTH_BAD_SIGNATURE = -3, /* no configured key (or not the kid's) made this signature */
    TR_AUTH_EXPIRED = -4,
    TR_AUTH_NOT_YET_VALID = -5,
    TR_AUTH_NO_KEYS = -6        /* the server has no --token-keys */
};
int tr_ffi_auth_verify(const char *token, size_t len, char *payload, size_t size, size_t *payload_len, const char **errmsg);

int tr_ffi_router_add(tr_router_t *router, const char *method, const char *pattern, size_t pattern_len, int handler, char *err, size_t err_size);

tr_req_pub_t *tr_ffi_test_request(const char *raw, size_t len, tr_router_t *router, char *err, size_t err_size);
const char *tr_ffi_test_response(size_t *len);
tr_router_t *tr_ffi_test_router_new(void);
/* Migrate and open a store on data_dir for in-process specs (jobs run at once). 0, or -1 and err. */
int tr_ffi_test_store_open(const char *data_dir, const char *app_dir, char *err, size_t err_size);
void tr_ffi_test_router_free(tr_router_t *router);
/* In-process specs: verify with the keys of the file at path (skew seconds). 0, or -1 and err. */
int tr_ffi_test_auth_keys(const char *path, double skew, char *err, size_t err_size);
/* In-process specs: a token for payload (JSON) signed with the key kid (NULL: the first) of those
 * given to tr_ffi_test_auth_keys, at out (size bytes). Its length, or -1. */
int tr_ffi_test_auth_sign(const char *kid, const char *payload, size_t len, char *out, size_t size);
