#include "pool.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t mem_counter_static;
uint64_t *tr_mem_counter = &mem_counter_static;

static void out_of_memory(size_t size)
{
    fprintf(stderr, "triage: out of memory allocating %zu bytes\n", size);
    abort();
}

void *tr_mem_alloc(size_t size)
{
    void *p = malloc(size);
    if (p == NULL)
        out_of_memory(size);
    ++*tr_mem_counter;
    return p;
}

void *tr_mem_calloc(size_t size)
{
    void *p = calloc(1, size);
    if (p == NULL)
        out_of_memory(size);
    ++*tr_mem_counter;
    return p;
}

void *tr_mem_realloc(void *old, size_t size)
{
    void *p = realloc(old, size);
    if (p == NULL)
        out_of_memory(size);
    ++*tr_mem_counter;
    return p;
}

void tr_mem_free(void *p)
{
    free(p);
}

char *tr_mem_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(tr_mem_alloc(n), s, n);
}

/* Free objects are linked through a pointer stored after the object, never inside it: a pooled
 * request keeps its serial while it waits in the pool (see tr_req_t). */
static void **link_of(const tr_pool_t *pool, void *obj)
{
    return (void **)((char *)obj + pool->obj_size);
}

void tr_pool_init(tr_pool_t *pool, size_t obj_size)
{
    size_t align = sizeof(void *);
    pool->obj_size = (obj_size + align - 1) / align * align;
    pool->free_list = NULL;
    pool->total = 0;
    pool->nfree = 0;
}

void *tr_pool_get(tr_pool_t *pool)
{
    void *obj = pool->free_list;
    if (obj != NULL) {
        pool->free_list = *link_of(pool, obj);
        pool->nfree--;
        return obj;
    }
    pool->total++;
    obj = tr_mem_alloc(pool->obj_size + sizeof(void *));
    memset(obj, 0, pool->obj_size);
    return obj;
}

void tr_pool_put(tr_pool_t *pool, void *obj)
{
    *link_of(pool, obj) = pool->free_list;
    pool->free_list = obj;
    pool->nfree++;
}

void tr_pool_destroy(tr_pool_t *pool)
{
    void *obj = pool->free_list;
    while (obj != NULL) {
        void *next = *link_of(pool, obj);
        tr_mem_free(obj);
        pool->total--;
        pool->nfree--;
        obj = next;
    }
    pool->free_list = NULL;
}

static int size_class(size_t size)
{
    int cls = 0;
    while (((size_t)1 << (cls + TR_BUF_MIN_SHIFT)) < size) {
        if (++cls == TR_BUF_CLASSES)
            return -1;
    }
    return cls;
}

int tr_buf_reserve(tr_bufpool_t *bp, tr_buf_t *buf, size_t extra)
{
    if (extra > SIZE_MAX - buf->len)
        return -1;
    size_t need = buf->len + extra;
    if (buf->data != NULL && need <= buf->cap)
        return 0;
    int cls = size_class(need);
    if (cls < 0)
        return -1;
    char *data = bp->free_list[cls];
    if (data != NULL) {
        bp->free_list[cls] = *(void **)data;
        bp->nfree--;
    } else {
        /* Zeroed: fresh heap memory may hold what other code freed (the store's pages, say). calloc
         * skips the work for a block it maps anew, which the kernel gives zeroed. */
        data = tr_mem_calloc((size_t)1 << (cls + TR_BUF_MIN_SHIFT));
        bp->total++;
    }
    if (buf->data != NULL) {
        memcpy(data, buf->data, buf->len);
        size_t len = buf->len;
        tr_buf_release(bp, buf);
        buf->len = len;
    }
    buf->data = data;
    buf->cap = (size_t)1 << (cls + TR_BUF_MIN_SHIFT);
    return 0;
}

void tr_buf_append(tr_bufpool_t *bp, tr_buf_t *buf, const void *data, size_t len)
{
    if (tr_buf_reserve(bp, buf, len) != 0)
        out_of_memory(buf->len + len);
    memcpy(buf->data + buf->len, data, len);
    buf->len += len;
}

void tr_buf_release(tr_bufpool_t *bp, tr_buf_t *buf)
{
    /* The bytes were a request's or a response's (a patient's data): the next holder of this memory,
     * pooled or from malloc, must not find them. Only the used part: a holder writes below len, and
     * one that lowers len clears what it drops (see pool.h). */
    if (buf->data != NULL)
        memset(buf->data, 0, buf->len);
    if (buf->data != NULL && buf->cap > TR_BUF_KEEP_MAX) {
        tr_mem_free(buf->data);
        bp->total--;
    } else if (buf->data != NULL) {
        int cls = size_class(buf->cap);
        *(void **)buf->data = bp->free_list[cls];
        bp->free_list[cls] = buf->data;
        bp->nfree++;
    }
    buf->data = NULL;
    buf->len = 0;
    buf->cap = 0;
}

void tr_bufpool_destroy(tr_bufpool_t *bp)
{
    for (int cls = 0; cls < TR_BUF_CLASSES; cls++) {
        void *data = bp->free_list[cls];
        while (data != NULL) {
            void *next = *(void **)data;
            tr_mem_free(data);
            bp->total--;
            bp->nfree--;
            data = next;
        }
        bp->free_list[cls] = NULL;
    }
}

uint64_t tr_bufpool_trim(tr_bufpool_t *bp, uint64_t keep)
{
    uint64_t freed = 0;
    for (int cls = TR_BUF_CLASSES - 1; cls >= 0 && bp->nfree > keep; cls--) {
        while (bp->free_list[cls] != NULL && bp->nfree > keep) {
            void *data = bp->free_list[cls];
            bp->free_list[cls] = *(void **)data;
            tr_mem_free(data);
            bp->total--;
            bp->nfree--;
            freed++;
        }
    }
    return freed;
}

uint64_t tr_pool_trim(tr_pool_t *pool, uint64_t keep)
{
    uint64_t freed = 0;
    while (pool->nfree > keep) {
        void *obj = pool->free_list;
        pool->free_list = *link_of(pool, obj);
        tr_mem_free(obj);
        pool->total--;
        pool->nfree--;
        freed++;
    }
    return freed;
}

void tr_buf_appendf(tr_bufpool_t *bp, tr_buf_t *buf, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0)
        tr_buf_append(bp, buf, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}
