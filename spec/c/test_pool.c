/*
 * Counted allocation, object pools and size-classed buffers (core/pool.h): what comes back from a pool
 * and what the allocation counter sees.
 */
#include <stdlib.h>
#include <string.h>

#include "pool.h"
#include "test.h"

static size_t class_size(int cls)
{
    return (size_t)1 << (cls + TR_BUF_MIN_SHIFT);
}

static void fill(void *p, size_t len, unsigned seed)
{
    unsigned char *b = p;
    for (size_t i = 0; i < len; i++)
        b[i] = (unsigned char)((i * 31 + seed) % 251);
}

static int filled(const void *p, size_t len, unsigned seed)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < len; i++)
        if (b[i] != (unsigned char)((i * 31 + seed) % 251))
            return 0;
    return 1;
}

TEST_IMPL(pool_reuse)
{
    tr_pool_t pool;
    tr_pool_init(&pool, 40);
    ASSERT_UINT_EQ(pool.total, 0);
    ASSERT_UINT_EQ(pool.nfree, 0);

    uint64_t count = *tr_mem_counter;
    void *a = tr_pool_get(&pool);
    void *b = tr_pool_get(&pool);
    ASSERT_NOT_NULL(a);
    ASSERT_NOT_NULL(b);
    ASSERT_PTR_NE(a, b);
    ASSERT_UINT_EQ(*tr_mem_counter - count, 2);
    ASSERT_UINT_EQ(pool.total, 2);
    ASSERT_UINT_EQ(pool.nfree, 0);
    memset(a, 0x11, 40); /* the whole object is ours */
    memset(b, 0x22, 40);

    tr_pool_put(&pool, a);
    ASSERT_UINT_EQ(pool.nfree, 1);
    ASSERT_UINT_EQ(pool.total, 2);
    void *c = tr_pool_get(&pool);
    ASSERT_PTR_EQ(c, a); /* the same object comes back */
    ASSERT_UINT_EQ(pool.nfree, 0);
    ASSERT_UINT_EQ(pool.total, 2);
    ASSERT_UINT_EQ(*tr_mem_counter - count, 2);

    /* Both back, both out again: the same two objects, no new one. */
    tr_pool_put(&pool, a);
    tr_pool_put(&pool, b);
    ASSERT_UINT_EQ(pool.nfree, 2);
    void *x = tr_pool_get(&pool);
    void *y = tr_pool_get(&pool);
    ASSERT_PTR_NE(x, y);
    ASSERT((x == a && y == b) || (x == b && y == a));
    ASSERT_UINT_EQ(pool.nfree, 0);
    ASSERT_UINT_EQ(pool.total, 2);

    /* An empty free list makes a new object. */
    void *z = tr_pool_get(&pool);
    ASSERT(z != a && z != b);
    ASSERT_UINT_EQ(pool.total, 3);
    ASSERT_UINT_EQ(*tr_mem_counter - count, 3);

    /* Many cycles, no allocation. */
    tr_pool_put(&pool, a);
    tr_pool_put(&pool, b);
    tr_pool_put(&pool, z);
    uint64_t warm = *tr_mem_counter;
    for (int i = 0; i < 10000; i++) {
        void *p = tr_pool_get(&pool), *q = tr_pool_get(&pool);
        ASSERT(p == a || p == b || p == z);
        ASSERT(q == a || q == b || q == z);
        tr_pool_put(&pool, q);
        tr_pool_put(&pool, p);
    }
    ASSERT_UINT_EQ(*tr_mem_counter, warm);
    ASSERT_UINT_EQ(pool.total, 3);
    ASSERT_UINT_EQ(pool.nfree, 3);
    tr_pool_destroy(&pool);

    /* Objects smaller than a pointer work too. */
    tr_pool_t tiny;
    tr_pool_init(&tiny, 1);
    char *t1 = tr_pool_get(&tiny), *t2 = tr_pool_get(&tiny);
    ASSERT_PTR_NE(t1, t2);
    *t1 = 'a';
    *t2 = 'b';
    tr_pool_put(&tiny, t1);
    ASSERT_PTR_EQ(tr_pool_get(&tiny), t1);
    ASSERT_INT_EQ(*t2, 'b');
    tr_pool_put(&tiny, t1);
    tr_pool_put(&tiny, t2);
    tr_pool_destroy(&tiny);
}

/* A new object is zeroed; a pooled one keeps its bytes while it waits in the pool (the request
 * serial lives in the first bytes of a request and must survive its stay there). */
TEST_IMPL(pool_keeps_contents)
{
    enum { SIZE = 61 };
    /* Leave dirty memory where the pool's first allocations are likely to land. */
    for (size_t size = SIZE; size <= SIZE + 64; size++) {
        void *dirty[8];
        for (int j = 0; j < 8; j++) {
            dirty[j] = malloc(size);
            memset(dirty[j], 0xff, size);
        }
        for (int j = 0; j < 8; j++)
            free(dirty[j]);
    }
    tr_pool_t pool;
    tr_pool_init(&pool, SIZE);
    unsigned char *objs[4];
    static const unsigned char zero[SIZE];
    for (int i = 0; i < 4; i++) {
        objs[i] = tr_pool_get(&pool);
        ASSERT(memcmp(objs[i], zero, SIZE) == 0);
        fill(objs[i], SIZE, (unsigned)i);
    }
    for (int i = 0; i < 4; i++)
        tr_pool_put(&pool, objs[i]);
    for (int i = 0; i < 4; i++) {
        ASSERT(filled(objs[i], SIZE, (unsigned)i)); /* untouched while free */
    }
    for (int i = 0; i < 4; i++) {
        unsigned char *o = tr_pool_get(&pool);
        int k = -1;
        for (int j = 0; j < 4; j++)
            if (o == objs[j])
                k = j;
        ASSERT(k >= 0);
        ASSERT(filled(o, SIZE, (unsigned)k)); /* as it was put back */
    }
    ASSERT_UINT_EQ(pool.total, 4);
    for (int i = 0; i < 4; i++)
        tr_pool_put(&pool, objs[i]);
    tr_pool_destroy(&pool);
}

TEST_IMPL(buf_size_classes)
{
    static const struct {
        size_t extra, cap;
    } cases[] = {
        {1, 4096},
        {4095, 4096},
        {4096, 4096},
        {4097, 8192},
        {8192, 8192},
        {8193, 16384},
        {65536, 65536},
        {65537, 131072},
        {(size_t)1 << 20, (size_t)1 << 20},
        {((size_t)1 << 20) + 1, (size_t)2 << 20},
    };
    ASSERT_UINT_EQ(class_size(0), 4096);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        tr_bufpool_t bp;
        memset(&bp, 0, sizeof(bp));
        tr_buf_t b = {0};
        uint64_t count = *tr_mem_counter;
        ASSERT_INT_EQ(tr_buf_reserve(&bp, &b, cases[i].extra), 0);
        ASSERT_NOT_NULL(b.data);
        ASSERT_UINT_EQ(b.cap, cases[i].cap);
        ASSERT_UINT_EQ(b.len, 0);
        ASSERT_UINT_EQ(bp.total, 1);
        ASSERT_UINT_EQ(*tr_mem_counter - count, 1);
        memset(b.data, 'x', b.cap); /* all of cap is usable */
        char *data = b.data;
        tr_buf_release(&bp, &b);
        ASSERT_NULL(b.data);
        ASSERT_UINT_EQ(b.len, 0);
        ASSERT_UINT_EQ(b.cap, 0);
        if (cases[i].cap > TR_BUF_KEEP_MAX) {
            /* Too large to keep: back to the system, and the next one is a new allocation. */
            ASSERT_UINT_EQ(bp.nfree, 0);
            ASSERT_UINT_EQ(bp.total, 0);
            ASSERT_INT_EQ(tr_buf_reserve(&bp, &b, cases[i].extra), 0);
            ASSERT_UINT_EQ(b.cap, cases[i].cap);
            ASSERT_UINT_EQ(*tr_mem_counter - count, 2);
            tr_buf_release(&bp, &b);
            continue;
        }
        ASSERT_UINT_EQ(bp.nfree, 1);
        /* Back from the pool, same class, same storage, no allocation. */
        ASSERT_INT_EQ(tr_buf_reserve(&bp, &b, cases[i].extra), 0);
        ASSERT_PTR_EQ(b.data, data);
        ASSERT_UINT_EQ(b.cap, cases[i].cap);
        ASSERT_UINT_EQ(bp.nfree, 0);
        ASSERT_UINT_EQ(bp.total, 1);
        ASSERT_UINT_EQ(*tr_mem_counter - count, 1);
        tr_buf_release(&bp, &b);
        tr_bufpool_destroy(&bp);
    }

    /* Buffers of one class are not handed out for another. */
    tr_bufpool_t bp;
    memset(&bp, 0, sizeof(bp));
    tr_buf_t small = {0}, big = {0}, other = {0};
    tr_buf_append(&bp, &small, "abc", 3);
    ASSERT_UINT_EQ(small.cap, 4096);
    ASSERT_INT_EQ(tr_buf_reserve(&bp, &big, 10000), 0);
    ASSERT_UINT_EQ(big.cap, 16384);
    char *small_data = small.data, *big_data = big.data;
    tr_buf_release(&bp, &small);
    tr_buf_release(&bp, &big);
    tr_buf_release(&bp, &big); /* releasing an empty buffer does nothing */
    ASSERT_UINT_EQ(bp.nfree, 2);
    ASSERT_INT_EQ(tr_buf_reserve(&bp, &other, 5000), 0); /* 8 KiB: neither */
    ASSERT(other.data != small_data && other.data != big_data);
    ASSERT_UINT_EQ(bp.total, 3);
    ASSERT_UINT_EQ(bp.nfree, 2);
    /* Reserving within the capacity keeps the storage. */
    tr_buf_append(&bp, &other, "0123456789", 10);
    char *kept = other.data;
    ASSERT_INT_EQ(tr_buf_reserve(&bp, &other, 8192 - 10), 0);
    ASSERT_PTR_EQ(other.data, kept);
    ASSERT_UINT_EQ(other.len, 10);
    ASSERT_UINT_EQ(bp.total, 3);
    /* One byte more moves to the next class and gives the old storage back. */
    ASSERT_INT_EQ(tr_buf_reserve(&bp, &other, 8192 - 9), 0);
    ASSERT_PTR_EQ(other.data, big_data); /* the 16 KiB buffer from the pool */
    ASSERT_UINT_EQ(other.cap, 16384);
    ASSERT_UINT_EQ(other.len, 10);
    ASSERT_MEM_EQ(other.data, other.len, "0123456789");
    ASSERT_UINT_EQ(bp.total, 3);
    ASSERT_UINT_EQ(bp.nfree, 2); /* 4 KiB and 8 KiB */
    tr_buf_t again = {0};
    ASSERT_INT_EQ(tr_buf_reserve(&bp, &again, 8000), 0);
    ASSERT_PTR_EQ(again.data, kept);
    tr_buf_release(&bp, &other);
    tr_buf_release(&bp, &again);
    ASSERT_UINT_EQ(bp.nfree, 3);
    tr_bufpool_destroy(&bp);
}

TEST_IMPL(buf_grow_preserves_data)
{
    tr_bufpool_t bp;
    memset(&bp, 0, sizeof(bp));
    tr_buf_t b = {0};
    enum { TOTAL = 600000, STEP = 997 };
    static unsigned char want[TOTAL];
    fill(want, TOTAL, 7);
    size_t caps_seen = 0, last_cap = 0;
    for (size_t done = 0; done < TOTAL;) {
        size_t n = TOTAL - done < STEP ? TOTAL - done : STEP;
        tr_buf_append(&bp, &b, want + done, n);
        done += n;
        ASSERT_UINT_EQ(b.len, done);
        ASSERT(b.cap >= b.len);
        ASSERT((b.cap & (b.cap - 1)) == 0);
        ASSERT(memcmp(b.data, want, done) == 0);
        if (b.cap != last_cap) {
            caps_seen++;
            last_cap = b.cap;
        }
    }
    ASSERT_UINT_EQ(b.cap, (size_t)1 << 20);
    ASSERT_UINT_EQ(caps_seen, 9); /* 4 KiB .. 1 MiB */
    ASSERT_UINT_EQ(bp.total, 6);  /* the 1 MiB one, and the five outgrown ones up to TR_BUF_KEEP_MAX */
    ASSERT_UINT_EQ(bp.nfree, 5);  /* (the outgrown 128 to 512 KiB ones went back to the system) */

    /* A second buffer grows through the pooled storage and both keep their bytes. */
    uint64_t count = *tr_mem_counter;
    tr_buf_t c = {0};
    static unsigned char want2[300000];
    fill(want2, sizeof(want2), 3);
    for (size_t done = 0; done < sizeof(want2); done += 1000)
        tr_buf_append(&bp, &c, want2 + done, 1000);
    ASSERT_UINT_EQ(c.len, sizeof(want2));
    ASSERT(memcmp(c.data, want2, sizeof(want2)) == 0);
    ASSERT(memcmp(b.data, want, TOTAL) == 0);
    ASSERT_UINT_EQ(*tr_mem_counter, count + 3); /* pooled up to 64 KiB; 128, 256 and 512 KiB anew */

    /* reserve() alone grows too, keeping the live bytes. */
    tr_buf_t d = {0};
    tr_buf_append(&bp, &d, "live bytes", 10);
    ASSERT_INT_EQ(tr_buf_reserve(&bp, &d, 100000), 0);
    ASSERT(d.cap >= 100010);
    ASSERT_MEM_EQ(d.data, d.len, "live bytes");
    tr_buf_release(&bp, &b);
    tr_buf_release(&bp, &c);
    tr_buf_release(&bp, &d);
    ASSERT_UINT_EQ(bp.nfree, bp.total);
    for (int cls = 0; cls < TR_BUF_CLASSES; cls++) /* nothing over TR_BUF_KEEP_MAX is kept */
        if (((size_t)1 << (cls + TR_BUF_MIN_SHIFT)) > TR_BUF_KEEP_MAX)
            ASSERT_NULL(bp.free_list[cls]);
    tr_bufpool_destroy(&bp);
}

TEST_IMPL(buf_too_big)
{
    tr_bufpool_t bp;
    memset(&bp, 0, sizeof(bp));
    size_t largest = class_size(TR_BUF_CLASSES - 1);
    tr_buf_t b = {0};
    uint64_t count = *tr_mem_counter;
    ASSERT_INT_EQ(tr_buf_reserve(&bp, &b, largest + 1), -1);
    ASSERT_NULL(b.data);
    ASSERT_UINT_EQ(b.len, 0);
    ASSERT_UINT_EQ(bp.total, 0);
    ASSERT_UINT_EQ(*tr_mem_counter, count);

    tr_buf_append(&bp, &b, "0123456789", 10);
    char *data = b.data;
    ASSERT_INT_EQ(tr_buf_reserve(&bp, &b, largest - 9), -1); /* 10 + largest - 9 bytes */
    ASSERT_PTR_EQ(b.data, data);
    ASSERT_UINT_EQ(b.len, 10);
    ASSERT_UINT_EQ(b.cap, 4096);
    ASSERT_MEM_EQ(b.data, b.len, "0123456789");
    ASSERT_UINT_EQ(bp.total, 1);
    tr_buf_release(&bp, &b);
    tr_bufpool_destroy(&bp);
}

/* A size whose sum with the live bytes wraps around is beyond every class too. */
TEST_IMPL(buf_reserve_overflow)
{
    tr_bufpool_t bp;
    memset(&bp, 0, sizeof(bp));
    tr_buf_t b = {0};
    tr_buf_append(&bp, &b, "0123456789", 10);
    char *data = b.data;
    ASSERT_INT_EQ(tr_buf_reserve(&bp, &b, SIZE_MAX), -1);
    ASSERT_INT_EQ(tr_buf_reserve(&bp, &b, SIZE_MAX - 5), -1);
    ASSERT_PTR_EQ(b.data, data);
    ASSERT_UINT_EQ(b.len, 10);
    tr_buf_release(&bp, &b);
    tr_bufpool_destroy(&bp);
}

TEST_IMPL(mem_counter)
{
    uint64_t *global = tr_mem_counter;
    uint64_t global_before = *global;
    uint64_t local = 0;
    tr_mem_counter = &local;

    char *p = tr_mem_alloc(10);
    ASSERT_UINT_EQ(local, 1);
    memcpy(p, "123456789", 10);
    p = tr_mem_realloc(p, 100000);
    ASSERT_UINT_EQ(local, 2);
    ASSERT_STR_EQ(p, "123456789");
    char *s = tr_mem_strdup("copied");
    ASSERT_UINT_EQ(local, 3);
    ASSERT_STR_EQ(s, "copied");
    ASSERT_PTR_NE(s, "copied");
    tr_mem_free(p);
    tr_mem_free(s);
    tr_mem_free(NULL);
    ASSERT_UINT_EQ(local, 3); /* freeing is not counted */

    /* Pools count through the same counter. */
    tr_pool_t pool;
    tr_pool_init(&pool, 100);
    void *o = tr_pool_get(&pool);
    ASSERT_UINT_EQ(local, 4);
    tr_pool_put(&pool, o);
    tr_bufpool_t bp;
    memset(&bp, 0, sizeof(bp));
    tr_buf_t b = {0};
    tr_buf_append(&bp, &b, "x", 1);
    ASSERT_UINT_EQ(local, 5);
    tr_buf_release(&bp, &b);
    /* Nor is giving pooled memory back to the system. */
    tr_pool_destroy(&pool);
    tr_bufpool_destroy(&bp);
    ASSERT_UINT_EQ(local, 5);

    tr_mem_counter = global;
    ASSERT_UINT_EQ(*global, global_before); /* nothing went to the old counter meanwhile */
    void *q = tr_mem_alloc(1);
    ASSERT_UINT_EQ(*global, global_before + 1);
    ASSERT_UINT_EQ(local, 5);
    tr_mem_free(q);
}

/* Allocation happens when a pool is cold, never when it can reuse: after one warm-up round, the
 * pooled memory of a request (a request object, its read, write and header buffers) costs nothing. */
TEST_IMPL(mem_counter_pool_reuse)
{
    typedef struct {
        uint32_t serial;
        char rest[2000];
    } fake_req_t;
    tr_pool_t reqs;
    tr_pool_init(&reqs, sizeof(fake_req_t));
    tr_bufpool_t bp;
    memset(&bp, 0, sizeof(bp));
    static char payload[20000];
    fill(payload, sizeof(payload), 1);

    uint64_t counts[3];
    for (int round = 0; round < 3; round++) {
        uint64_t before = *tr_mem_counter;
        for (int i = 0; i < 500; i++) {
            fake_req_t *r1 = tr_pool_get(&reqs), *r2 = tr_pool_get(&reqs);
            tr_buf_t rbuf = {0}, wbuf = {0}, hdrs = {0};
            tr_buf_append(&bp, &rbuf, payload, 300);
            tr_buf_append(&bp, &rbuf, payload, 5000); /* grows 4 KiB -> 8 KiB */
            tr_buf_append(&bp, &hdrs, "X-A: b\r\n", 8);
            ASSERT_INT_EQ(tr_buf_reserve(&bp, &wbuf, (size_t)(i % 4) * 5000), 0);
            tr_buf_append(&bp, &wbuf, payload, (size_t)(i % 4) * 5000);
            ASSERT(memcmp(rbuf.data, payload, 300) == 0);
            ASSERT(memcmp(rbuf.data + 300, payload, 5000) == 0);
            tr_buf_release(&bp, &hdrs);
            tr_buf_release(&bp, &wbuf);
            tr_buf_release(&bp, &rbuf);
            tr_pool_put(&reqs, r2);
            tr_pool_put(&reqs, r1);
        }
        counts[round] = *tr_mem_counter - before;
    }
    ASSERT(counts[0] > 0); /* the cold round allocated */
    ASSERT_UINT_EQ(counts[0], reqs.total + bp.total);
    ASSERT_UINT_EQ(counts[1], 0);
    ASSERT_UINT_EQ(counts[2], 0);
    ASSERT_UINT_EQ(reqs.total, 2);
    ASSERT_UINT_EQ(reqs.nfree, 2);
    ASSERT_UINT_EQ(bp.nfree, bp.total);
    tr_pool_destroy(&reqs);
    tr_bufpool_destroy(&bp);
}

/* Destroying frees what is on the free lists, and only that: what is still taken stays the caller's
 * and stays counted; the pools are usable afterwards, and no allocation is counted for the frees. */
TEST_IMPL(pool_destroy)
{
    tr_pool_t pool;
    tr_pool_init(&pool, 24);
    tr_pool_destroy(&pool); /* an empty pool */
    ASSERT_UINT_EQ(pool.total, 0);
    ASSERT_UINT_EQ(pool.nfree, 0);
    void *objs[5];
    for (int i = 0; i < 5; i++)
        objs[i] = tr_pool_get(&pool);
    for (int i = 0; i < 3; i++)
        tr_pool_put(&pool, objs[i]);
    ASSERT_UINT_EQ(pool.total, 5);
    ASSERT_UINT_EQ(pool.nfree, 3);
    uint64_t count = *tr_mem_counter;
    tr_pool_destroy(&pool);
    ASSERT_UINT_EQ(*tr_mem_counter, count);
    ASSERT_UINT_EQ(pool.total, 2); /* objs[3] and objs[4], still taken */
    ASSERT_UINT_EQ(pool.nfree, 0);
    ASSERT_NULL(pool.free_list);
    memset(objs[3], 0x33, 24); /* untouched by the destroy */
    memset(objs[4], 0x44, 24);
    /* Still a pool: a new object is made (and counted), the ones put back are reused. */
    void *n = tr_pool_get(&pool);
    ASSERT_NOT_NULL(n);
    ASSERT_UINT_EQ(pool.total, 3);
    ASSERT_UINT_EQ(*tr_mem_counter - count, 1);
    tr_pool_put(&pool, objs[3]);
    ASSERT_PTR_EQ(tr_pool_get(&pool), objs[3]);
    tr_pool_put(&pool, objs[3]);
    tr_pool_put(&pool, objs[4]);
    tr_pool_put(&pool, n);
    tr_pool_destroy(&pool);
    ASSERT_UINT_EQ(pool.total, 0);
    ASSERT_UINT_EQ(pool.nfree, 0);

    tr_bufpool_t bp;
    memset(&bp, 0, sizeof(bp));
    tr_bufpool_destroy(&bp); /* an empty pool */
    ASSERT_UINT_EQ(bp.total, 0);
    tr_buf_t small = {0}, small2 = {0}, big = {0}, held = {0};
    tr_buf_append(&bp, &small, "a", 1);
    tr_buf_append(&bp, &small2, "b", 1);
    ASSERT_INT_EQ(tr_buf_reserve(&bp, &big, 60000), 0);
    tr_buf_append(&bp, &held, "held", 4);
    tr_buf_release(&bp, &small);
    tr_buf_release(&bp, &small2);
    tr_buf_release(&bp, &big);
    ASSERT_UINT_EQ(bp.total, 4);
    ASSERT_UINT_EQ(bp.nfree, 3);
    count = *tr_mem_counter;
    tr_bufpool_destroy(&bp);
    ASSERT_UINT_EQ(*tr_mem_counter, count);
    ASSERT_UINT_EQ(bp.total, 1); /* held */
    ASSERT_UINT_EQ(bp.nfree, 0);
    for (int cls = 0; cls < TR_BUF_CLASSES; cls++)
        ASSERT_NULL(bp.free_list[cls]);
    ASSERT_MEM_EQ(held.data, held.len, "held");
    /* Still a pool. */
    tr_buf_append(&bp, &small, "c", 1);
    ASSERT_UINT_EQ(bp.total, 2);
    ASSERT_UINT_EQ(*tr_mem_counter - count, 1);
    tr_buf_release(&bp, &small);
    tr_buf_release(&bp, &held);
    tr_bufpool_destroy(&bp);
    ASSERT_UINT_EQ(bp.total, 0);
    ASSERT_UINT_EQ(bp.nfree, 0);
}

/* Trimming frees free objects and buffers beyond what is kept (largest buffers first), never taken
 * ones; the pools stay usable. */
TEST_IMPL(pool_trim)
{
    tr_pool_t pool;
    tr_pool_init(&pool, 48);
    void *objs[10];
    for (int i = 0; i < 10; i++)
        objs[i] = tr_pool_get(&pool);
    for (int i = 0; i < 8; i++)
        tr_pool_put(&pool, objs[i]);
    ASSERT_UINT_EQ(tr_pool_trim(&pool, 3), 5);
    ASSERT_UINT_EQ(pool.nfree, 3);
    ASSERT_UINT_EQ(pool.total, 5); /* 3 free, 2 taken */
    ASSERT_UINT_EQ(tr_pool_trim(&pool, 3), 0);
    tr_pool_put(&pool, objs[8]);
    tr_pool_put(&pool, objs[9]);
    tr_pool_destroy(&pool);
    ASSERT_UINT_EQ(pool.total, 0);

    tr_bufpool_t bp;
    memset(&bp, 0, sizeof(bp));
    tr_buf_t small[4] = {{0}}, mid = {0};
    for (int i = 0; i < 4; i++)
        ASSERT_INT_EQ(tr_buf_reserve(&bp, &small[i], 100), 0);
    ASSERT_INT_EQ(tr_buf_reserve(&bp, &mid, 40000), 0); /* 64 KiB class: kept when released */
    for (int i = 0; i < 4; i++)
        tr_buf_release(&bp, &small[i]);
    tr_buf_release(&bp, &mid);
    ASSERT_UINT_EQ(bp.nfree, 5);
    ASSERT_UINT_EQ(tr_bufpool_trim(&bp, 4), 1);
    ASSERT_NULL(bp.free_list[4]); /* the largest went first */
    ASSERT_UINT_EQ(bp.nfree, 4);
    ASSERT_UINT_EQ(bp.total, 4);
    tr_bufpool_destroy(&bp);
    ASSERT_UINT_EQ(bp.total, 0);
}

/* Does any buffer on bp's free lists hold needle (anywhere in its capacity)? */
static int free_buffers_contain(const tr_bufpool_t *bp, const char *needle)
{
    for (int cls = 0; cls < TR_BUF_CLASSES; cls++)
        for (void *p = bp->free_list[cls]; p != NULL; p = *(void **)p)
            if (tr_test_contains(p, class_size(cls), needle))
                return 1;
    return 0;
}

TEST_IMPL(buf_release_clears)
{
    static const char secret[] = "{\"patient\":\"P-4711\",\"phq9\":[3,3,3]}";
    tr_bufpool_t bp = {0};
    tr_buf_t a = {0}, b = {0};
    tr_buf_append(&bp, &a, "POST /epro HTTP/1.1\r\n\r\n", 23);
    tr_buf_append(&bp, &a, secret, sizeof(secret) - 1);
    tr_buf_release(&bp, &a);
    ASSERT_UINT_EQ(bp.nfree, 1);
    ASSERT(!free_buffers_contain(&bp, secret));
    ASSERT(!free_buffers_contain(&bp, "P-4711"));

    /* Growing moves the bytes to a larger buffer: the smaller one goes back to the pool cleared. */
    for (int i = 0; i < 200; i++)
        tr_buf_append(&bp, &b, secret, sizeof(secret) - 1); /* past 4 KiB: 8 KiB */
    ASSERT_UINT_EQ(b.cap, class_size(1));
    ASSERT(!free_buffers_contain(&bp, "P-4711"));
    tr_buf_release(&bp, &b);
    ASSERT(!free_buffers_contain(&bp, "P-4711"));

    /* Taken again, a buffer holds none of its previous holder's bytes. */
    tr_buf_t c = {0};
    ASSERT_INT_EQ(tr_buf_reserve(&bp, &c, 100), 0);
    ASSERT(!tr_test_contains(c.data, c.cap, "P-4711"));
    tr_buf_release(&bp, &c);
    tr_bufpool_destroy(&bp);
}
