/*
 * Memory for the C core: counted allocation, fixed-size object pools and size-classed buffers.
 *
 * Every allocation the core makes goes through tr_mem_alloc/tr_mem_realloc, which bump one counter
 * (tr_mem_counter, which a worker points into shared memory so /_triage/status can show it live).
 * Request-path memory comes from pools that only grow: after warm-up the request path makes no
 * allocation at all, and a pointer to a pooled object stays a valid object for the life of the
 * process (it may belong to another request by then: that is what request serials are for). The
 * one exception is tr_pool_destroy/tr_bufpool_destroy, for tests and orderly teardown only.
 */
#ifndef TR_POOL_H
#define TR_POOL_H

#include <stddef.h>
#include <stdint.h>

/* Where allocations are counted; points at a static counter until a worker redirects it. */
extern uint64_t *tr_mem_counter;

/* malloc/realloc that count the call and abort the process on OOM (never return NULL). The counter
 * counts allocation calls, not live blocks: tr_mem_free does not change it. */
void *tr_mem_alloc(size_t size);
void *tr_mem_calloc(size_t size); /* zeroed */
void *tr_mem_realloc(void *p, size_t size);
void tr_mem_free(void *p);
char *tr_mem_strdup(const char *s);

/* A free list of fixed-size objects. Objects are never returned to the system (but by
 * tr_pool_destroy), and the pool never writes into a free object (links live in a hidden trailer). */
typedef struct tr_pool_s {
    size_t obj_size;
    void *free_list;
    uint64_t total; /* objects ever created (less those tr_pool_destroy freed) */
    uint64_t nfree; /* objects on the free list now */
} tr_pool_t;

void tr_pool_init(tr_pool_t *pool, size_t obj_size);
/* An object from the free list (its bytes as they were when it was put back), or a new zeroed one. */
void *tr_pool_get(tr_pool_t *pool);
void tr_pool_put(tr_pool_t *pool, void *obj);
/*
 * Free every object on the free list, through tr_mem_free (tr_mem_counter, a count of allocation
 * calls, does not change); total loses them and nfree becomes 0. For tests and orderly teardown:
 * pointers to the freed objects must not be used again. Objects still taken are the caller's to put
 * back first; any that are not stay allocated, and counted in total. The pool stays usable.
 */
void tr_pool_destroy(tr_pool_t *pool);

/* Free free objects until at most keep are left. Returns how many were freed. */
uint64_t tr_pool_trim(tr_pool_t *pool, uint64_t keep);

/*
 * Buffers in power-of-two size classes from TR_BUF_MIN up. A tr_buf_t with data == NULL holds nothing;
 * tr_buf_reserve takes or grows its storage (copying the live bytes), tr_buf_release gives it back.
 */
#define TR_BUF_MIN_SHIFT 12        /* 4 KiB */
#define TR_BUF_CLASSES 20          /* up to 2 GiB */
#define TR_BUF_KEEP_MAX (64 << 10) /* larger buffers go back to the system when released, not to a pool */

typedef struct tr_buf_s {
    char *data;
    size_t len;
    size_t cap;
} tr_buf_t;

typedef struct tr_bufpool_s {
    void *free_list[TR_BUF_CLASSES];
    uint64_t total; /* buffers ever created (less those tr_bufpool_destroy freed) */
    uint64_t nfree; /* buffers on the free lists now */
} tr_bufpool_t;

/* Make room for `extra` more bytes after buf->len. Returns 0, or -1 if the size is beyond every class. */
int tr_buf_reserve(tr_bufpool_t *bp, tr_buf_t *buf, size_t extra);
/* Append bytes, growing as needed (aborts only on OOM). */
void tr_buf_append(tr_bufpool_t *bp, tr_buf_t *buf, const void *data, size_t len);

/* Append printf-style text (one piece of at most 511 bytes: longer output is cut there). For the
 * documents the master renders (status, metrics), not for the request path. */
void tr_buf_appendf(tr_bufpool_t *bp, tr_buf_t *buf, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Give buf's storage back: to its pool, or to the system if it is larger than TR_BUF_KEEP_MAX (a
 * burst of large bodies or responses does not stay resident). Its first buf->len bytes are zeroed
 * first, so no later holder can read them: a holder that lowers len without releasing clears what it
 * drops itself. */
void tr_buf_release(tr_bufpool_t *bp, tr_buf_t *buf);
/*
 * Free every buffer on the free lists, as tr_pool_destroy does for objects (tr_mem_counter does not
 * change; total loses them, nfree becomes 0). For tests and orderly teardown: buffers still held by a
 * tr_buf_t are the caller's to tr_buf_release first. The pool stays usable.
 */
void tr_bufpool_destroy(tr_bufpool_t *bp);

/* Free free buffers until at most keep are left (pools shrink back after a burst). Returns how many
 * were freed. */
uint64_t tr_bufpool_trim(tr_bufpool_t *bp, uint64_t keep);

#endif
