/*
 * malloc_count: an LD_PRELOAD library that counts calls to the libc allocator
 * in every process it is loaded into, readable from outside while the
 * process runs.
 *
 *     MALLOC_COUNT_DIR=/tmp/mc LD_PRELOAD=bench/.build/malloc_count.so prog
 *
 * Each process (and each child it forks: a pthread_atfork handler switches the
 * child to its own file) creates $MALLOC_COUNT_DIR/<pid>, maps it MAP_SHARED
 * and increments counters in it atomically. Another process reads the file at
 * any time; the layout is struct mc_file below: little-endian 64-bit words.
 *
 * The wrappers forward to glibc's __libc_malloc & co., so no dlsym() is needed
 * (dlsym may itself allocate, which would recurse during start-up). Calls made
 * before the file is mapped (by the dynamic loader or earlier constructors)
 * are counted in a static block and added in when the file appears.
 * Allocators that do not go through malloc (LuaJIT's own allocator on 64-bit,
 * which takes memory from mmap; custom pools) are, by design, not counted.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);

#define MC_MAGIC 0x31544e434c4c414dULL /* "MALLCNT1" */

struct mc_file {
    uint64_t magic;
    uint64_t pid;
    uint64_t malloc_calls;
    uint64_t calloc_calls;
    uint64_t realloc_calls;   /* realloc and reallocarray */
    uint64_t free_calls;      /* including free(NULL) */
    uint64_t aligned_calls;   /* posix_memalign, aligned_alloc, memalign, valloc, pvalloc */
    uint64_t bytes_requested; /* sum of sizes asked of every allocating call */
};

static struct mc_file early = {MC_MAGIC, 0, 0, 0, 0, 0, 0, 0};
static struct mc_file *mc = &early;

#define INC(field, n) __atomic_fetch_add(&mc->field, (uint64_t)(n), __ATOMIC_RELAXED)

static char *put_str(char *p, const char *s)
{
    while (*s)
        *p++ = *s++;
    return p;
}

static char *put_uint(char *p, unsigned long v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

/* Maps $MALLOC_COUNT_DIR/<pid> and makes it the live counter block. */
static void attach(int fresh)
{
    const char *dir = getenv("MALLOC_COUNT_DIR");
    if (!dir || !*dir || strlen(dir) > 4000)
        return;
    char path[4096 + 32];
    char *p = put_str(path, dir);
    *p++ = '/';
    p = put_uint(p, (unsigned long)getpid());
    *p = 0;
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    if (ftruncate(fd, sizeof(struct mc_file)) < 0) {
        close(fd);
        return;
    }
    struct mc_file *m = mmap(NULL, sizeof(struct mc_file), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED)
        return;
    struct mc_file *old = mc;
    if (!fresh) {
        /* what was counted before the file existed */
        m->malloc_calls = old->malloc_calls;
        m->calloc_calls = old->calloc_calls;
        m->realloc_calls = old->realloc_calls;
        m->free_calls = old->free_calls;
        m->aligned_calls = old->aligned_calls;
        m->bytes_requested = old->bytes_requested;
    }
    m->pid = (uint64_t)getpid();
    __atomic_store_n(&m->magic, MC_MAGIC, __ATOMIC_RELEASE);
    mc = m;
    if (old != &early)
        munmap(old, sizeof(struct mc_file));
}

/* In a forked child: the inherited mapping is the parent's file; start anew. */
static void after_fork_child(void)
{
    mc = &early; /* the parent's mapping stays until replaced */
    memset(&early, 0, sizeof early);
    early.magic = MC_MAGIC;
    attach(1);
}

__attribute__((constructor(101))) static void mc_init(void)
{
    attach(0);
    pthread_atfork(NULL, NULL, after_fork_child);
}

void *malloc(size_t n)
{
    INC(malloc_calls, 1);
    INC(bytes_requested, n);
    return __libc_malloc(n);
}

void *calloc(size_t a, size_t b)
{
    INC(calloc_calls, 1);
    INC(bytes_requested, a * b);
    return __libc_calloc(a, b);
}

void *realloc(void *p, size_t n)
{
    INC(realloc_calls, 1);
    INC(bytes_requested, n);
    return __libc_realloc(p, n);
}

void *reallocarray(void *p, size_t a, size_t b)
{
    size_t n;
    if (__builtin_mul_overflow(a, b, &n)) {
        errno = ENOMEM;
        return NULL;
    }
    INC(realloc_calls, 1);
    INC(bytes_requested, n);
    return __libc_realloc(p, n);
}

void free(void *p)
{
    INC(free_calls, 1);
    __libc_free(p);
}

void *memalign(size_t align, size_t n)
{
    INC(aligned_calls, 1);
    INC(bytes_requested, n);
    return __libc_memalign(align, n);
}

void *aligned_alloc(size_t align, size_t n)
{
    INC(aligned_calls, 1);
    INC(bytes_requested, n);
    return __libc_memalign(align, n);
}

int posix_memalign(void **out, size_t align, size_t n)
{
    INC(aligned_calls, 1);
    INC(bytes_requested, n);
    if (align < sizeof(void *) || (align & (align - 1)) != 0)
        return EINVAL;
    void *p = __libc_memalign(align, n);
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}

void *valloc(size_t n)
{
    INC(aligned_calls, 1);
    INC(bytes_requested, n);
    return __libc_valloc(n);
}

void *pvalloc(size_t n)
{
    INC(aligned_calls, 1);
    INC(bytes_requested, n);
    return __libc_pvalloc(n);
}
