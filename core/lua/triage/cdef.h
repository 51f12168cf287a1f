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

int tr_ffi_router_add(tr_router_t *router, const char *method, const char *pattern, size_t pattern_len, int handler, char *err, size_t err_size);

tr_req_pub_t *tr_ffi_test_request(const char *raw, size_t len, tr_router_t *router, char *err, size_t err_size);
const char *tr_ffi_test_response(size_t *len);
tr_router_t *tr_ffi_test_router_new(void);
void tr_ffi_test_router_free(tr_router_t *router);
