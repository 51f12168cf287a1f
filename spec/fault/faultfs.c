/* faultfs: an LD_PRELOAD shim that makes file I/O fail on demand, for the durability specs.
 *
 *   LD_PRELOAD=libtriage_faultfs.so TRIAGE_FAULT_CONTROL=/tmp/x/control build/triage ...
 *   echo fsync=EIO > /tmp/x/control        # fsync/fdatasync on matching files fail with EIO
 *   echo write=ENOSPC > /tmp/x/control     # writes to matching files fail with ENOSPC
 *   : > /tmp/x/control                     # (or rm it) no faults
 *
 * Which files: those whose path, as given to open/openat/creat, contains TRIAGE_FAULT_MATCH
 * (default "triage.db", which also matches the -wal, -shm and -journal files beside it). The shim
 * remembers which descriptors were opened on such paths (open, open64, openat, openat64, creat,
 * creat64 and their _FORTIFY_SOURCE variants), follows them through dup, dup2, dup3 and
 * fcntl(F_DUPFD, F_DUPFD_CLOEXEC), and forgets them at close. A descriptor closed behind its back
 * (fclose, close_range) and reused for something else is not mistaken for the file: before a fault
 * is injected, the descriptor's device and inode are compared with those recorded at open.
 *
 * The control file (its path in TRIAGE_FAULT_CONTROL) holds tokens separated by white space, commas
 * or semicolons; '#' starts a comment that runs to the end of the line:
 *   fsync=E   fsync, fdatasync and sync_file_range fail with errno E
 *   write=E   write, pwrite, pwrite64, writev, pwritev, pwritev64, pwritev2, pwritev64v2 of at least
 *             one byte fail with errno E and write nothing; so do fallocate and posix_fallocate
 *             (which returns E)
 * E is a name (EIO, ENOSPC, EDQUOT, EROFS, EFBIG, EPERM, EACCES, EAGAIN, EINTR, ENOMEM, EBADF) or a
 * number; "none", "off" or "0" clear that fault. An empty or absent file: no faults. Nothing else is
 * touched: reads, opens, locks, ftruncate, the memory-mapped contents of a -shm file.
 *
 * Cost: a write or fsync on a descriptor that is not tracked costs one array load more than the real
 * call. On a tracked descriptor the control file is looked at (stat) at most every 2 ms, and read
 * again when its inode, size, mtime or ctime changed, or when it was last read 100 ms ago or more; so
 * every call on a tracked descriptor that starts 2 ms or more after a change sees it (to change the
 * file in one step, write a new file and rename it over the old one). Thread-safe: the fault state
 * is atomic; one thread at a time re-reads the file while the others that need the new state wait
 * for it; a fork resets that lock in the child.
 *
 * TRIAGE_FAULT_LOG=FILE (optional) appends a line per injected fault:
 *   faultfs: pid P OP fd N ENAME
 * The real functions are found with dlsym(RTLD_NEXT). Descriptors at or above FF_MAX_FD are never
 * tracked. Built without sanitizers (spec/fault/fault.cmake): it is preloaded into programs that are
 * not instrumented. */
#undef _FORTIFY_SOURCE
#undef _FILE_OFFSET_BITS
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define FF_EXPORT __attribute__((visibility("default")))
#define FF_MAX_FD (1 << 17)
#define FF_CHECK_NS (2LL * 1000 * 1000)
#define FF_REREAD_NS (100LL * 1000 * 1000)

/* ---- the real functions ---- */

static void *ff_sym(const char *name)
{
    void *p = dlsym(RTLD_NEXT, name);
    if (!p) {
        char msg[160];
        int n = snprintf(msg, sizeof msg, "faultfs: dlsym(RTLD_NEXT, \"%s\") found nothing\n", name);
        if (n > 0)
            (void)!syscall(SYS_write, 2, msg, (size_t)n);
        abort();
    }
    return p;
}

/* real_NAME(): the next definition of NAME, looked up once (a race only looks it up twice). */
#define FF_REAL(rtype, name, params)                                                                                   \
    typedef rtype(*name##_fn) params;                                                                                  \
    static name##_fn name##_next;                                                                                      \
    static name##_fn real_##name(void)                                                                                 \
    {                                                                                                                  \
        name##_fn f = __atomic_load_n(&name##_next, __ATOMIC_ACQUIRE);                                                 \
        if (!f) {                                                                                                      \
            f = (name##_fn)ff_sym(#name);                                                                              \
            __atomic_store_n(&name##_next, f, __ATOMIC_RELEASE);                                                       \
        }                                                                                                              \
        return f;                                                                                                      \
    }

FF_REAL(int, open, (const char *, int, ...))
FF_REAL(int, open64, (const char *, int, ...))
FF_REAL(int, openat, (int, const char *, int, ...))
FF_REAL(int, openat64, (int, const char *, int, ...))
FF_REAL(int, __open_2, (const char *, int))
FF_REAL(int, __open64_2, (const char *, int))
FF_REAL(int, __openat_2, (int, const char *, int))
FF_REAL(int, __openat64_2, (int, const char *, int))
FF_REAL(int, creat, (const char *, mode_t))
FF_REAL(int, creat64, (const char *, mode_t))
FF_REAL(int, close, (int))
FF_REAL(int, dup, (int))
FF_REAL(int, dup2, (int, int))
FF_REAL(int, dup3, (int, int, int))
FF_REAL(int, fcntl, (int, int, ...))
FF_REAL(int, fcntl64, (int, int, ...))
FF_REAL(ssize_t, write, (int, const void *, size_t))
FF_REAL(ssize_t, pwrite, (int, const void *, size_t, off_t))
FF_REAL(ssize_t, pwrite64, (int, const void *, size_t, off64_t))
FF_REAL(ssize_t, writev, (int, const struct iovec *, int))
FF_REAL(ssize_t, pwritev, (int, const struct iovec *, int, off_t))
FF_REAL(ssize_t, pwritev64, (int, const struct iovec *, int, off64_t))
FF_REAL(ssize_t, pwritev2, (int, const struct iovec *, int, off_t, int))
FF_REAL(ssize_t, pwritev64v2, (int, const struct iovec *, int, off64_t, int))
FF_REAL(int, fallocate, (int, int, off_t, off_t))
FF_REAL(int, fallocate64, (int, int, off64_t, off64_t))
FF_REAL(int, posix_fallocate, (int, off_t, off_t))
FF_REAL(int, posix_fallocate64, (int, off64_t, off64_t))
FF_REAL(int, fsync, (int))
FF_REAL(int, fdatasync, (int))
FF_REAL(int, sync_file_range, (int, off64_t, off64_t, unsigned int))

/* ---- configuration ---- */

static pthread_once_t ff_once = PTHREAD_ONCE_INIT;
static const char *ff_match = "triage.db";
static const char *ff_control; /* NULL: never any fault */
static const char *ff_log;

static atomic_llong ff_next_check; /* monotonic ns of the next look at the control file */
static pthread_mutex_t ff_ctl_lock = PTHREAD_MUTEX_INITIALIZER;

static void ff_atfork_child(void)
{
    pthread_mutex_init(&ff_ctl_lock, NULL);
    atomic_store_explicit(&ff_next_check, 0, memory_order_relaxed);
}

static const char *ff_env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? strdup(v) : NULL;
}

static void ff_init(void)
{
    const char *m = ff_env("TRIAGE_FAULT_MATCH");
    if (m)
        ff_match = m;
    ff_control = ff_env("TRIAGE_FAULT_CONTROL");
    ff_log = ff_env("TRIAGE_FAULT_LOG");
    pthread_atfork(NULL, NULL, ff_atfork_child);
}

__attribute__((constructor)) static void ff_constructor(void)
{
    pthread_once(&ff_once, ff_init);
}

/* ---- tracked descriptors ---- */

struct ff_fd {
    atomic_int on; /* opened on a matching path */
    dev_t dev;
    ino_t ino;
};
static struct ff_fd ff_fds[FF_MAX_FD];

static int ff_tracked(int fd)
{
    return fd >= 0 && fd < FF_MAX_FD && atomic_load_explicit(&ff_fds[fd].on, memory_order_acquire);
}

static void ff_untrack(int fd)
{
    if (fd >= 0 && fd < FF_MAX_FD && atomic_load_explicit(&ff_fds[fd].on, memory_order_relaxed))
        atomic_store_explicit(&ff_fds[fd].on, 0, memory_order_release);
}

/* fd was just opened on path (fd < 0: the open failed). errno is kept. */
static void ff_opened(int fd, const char *path)
{
    if (fd < 0 || fd >= FF_MAX_FD)
        return;
    pthread_once(&ff_once, ff_init);
    if (!path || !strstr(path, ff_match)) {
        ff_untrack(fd);
        return;
    }
    int saved = errno;
    struct stat st;
    if (fstat(fd, &st) == 0) {
        ff_fds[fd].dev = st.st_dev;
        ff_fds[fd].ino = st.st_ino;
        atomic_store_explicit(&ff_fds[fd].on, 1, memory_order_release);
    } else {
        ff_untrack(fd);
    }
    errno = saved;
}

/* to is a duplicate of from (to < 0: the dup failed). */
static void ff_copy(int from, int to)
{
    if (to < 0 || to >= FF_MAX_FD || from == to)
        return;
    if (ff_tracked(from)) {
        ff_fds[to].dev = ff_fds[from].dev;
        ff_fds[to].ino = ff_fds[from].ino;
        atomic_store_explicit(&ff_fds[to].on, 1, memory_order_release);
    } else {
        ff_untrack(to);
    }
}

/* ---- the control file ---- */

enum { FF_FSYNC, FF_WRITE };
static atomic_int ff_errno_of[2]; /* 0: no fault */

/* guarded by ff_ctl_lock */
static struct {
    int exists;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtim, ctim;
    long long read_at;
} ff_ctl;

static const struct {
    const char *name;
    int value;
} ff_errnos[] = {
    {"EIO", EIO},       {"ENOSPC", ENOSPC}, {"EDQUOT", EDQUOT}, {"EROFS", EROFS},   {"EFBIG", EFBIG}, {"EPERM", EPERM},
    {"EACCES", EACCES}, {"EAGAIN", EAGAIN}, {"EINTR", EINTR},   {"ENOMEM", ENOMEM}, {"EBADF", EBADF},
};

static const char *ff_errno_name(int e, char *buf, size_t size)
{
    for (size_t i = 0; i < sizeof ff_errnos / sizeof ff_errnos[0]; i++)
        if (ff_errnos[i].value == e)
            return ff_errnos[i].name;
    snprintf(buf, size, "%d", e);
    return buf;
}

/* -1: not understood */
static int ff_parse_errno(const char *v)
{
    if (!strcmp(v, "none") || !strcmp(v, "off") || !strcmp(v, "0"))
        return 0;
    for (size_t i = 0; i < sizeof ff_errnos / sizeof ff_errnos[0]; i++)
        if (!strcmp(v, ff_errnos[i].name))
            return ff_errnos[i].value;
    char *end;
    long n = strtol(v, &end, 10);
    if (*v && !*end && n > 0 && n < 4096)
        return (int)n;
    return -1;
}

static void ff_parse(char *text, int out[2])
{
    /* comments out */
    for (char *p = text; (p = strchr(p, '#'));) {
        char *eol = strchr(p, '\n');
        size_t n = eol ? (size_t)(eol - p) : strlen(p);
        memset(p, ' ', n);
        p += n;
    }
    char *save = NULL;
    for (char *tok = strtok_r(text, " \t\r\n,;", &save); tok; tok = strtok_r(NULL, " \t\r\n,;", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq)
            continue;
        *eq = 0;
        int e = ff_parse_errno(eq + 1);
        if (e < 0)
            continue;
        if (!strcmp(tok, "fsync"))
            out[FF_FSYNC] = e;
        else if (!strcmp(tok, "write"))
            out[FF_WRITE] = e;
    }
}

static long long ff_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int ff_same_time(struct timespec a, struct timespec b)
{
    return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

/* under ff_ctl_lock */
static void ff_reload(long long now)
{
    struct stat st;
    int exists = ff_control && stat(ff_control, &st) == 0;
    int same = exists == ff_ctl.exists;
    if (same && exists)
        same = st.st_dev == ff_ctl.dev && st.st_ino == ff_ctl.ino && st.st_size == ff_ctl.size &&
               ff_same_time(st.st_mtim, ff_ctl.mtim) && ff_same_time(st.st_ctim, ff_ctl.ctim);
    if (same && (!exists || now - ff_ctl.read_at < FF_REREAD_NS))
        return;
    ff_ctl.exists = exists;
    ff_ctl.read_at = now;
    int err[2] = {0, 0};
    if (exists) {
        ff_ctl.dev = st.st_dev;
        ff_ctl.ino = st.st_ino;
        ff_ctl.size = st.st_size;
        ff_ctl.mtim = st.st_mtim;
        ff_ctl.ctim = st.st_ctim;
        char buf[4096];
        size_t len = 0;
        int fd = real_open()(ff_control, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            ssize_t r;
            while (len < sizeof buf - 1 && (r = read(fd, buf + len, sizeof buf - 1 - len)) != 0) {
                if (r < 0) {
                    if (errno == EINTR)
                        continue;
                    break;
                }
                len += (size_t)r;
            }
            real_close()(fd);
        }
        buf[len] = 0;
        ff_parse(buf, err);
    }
    atomic_store_explicit(&ff_errno_of[FF_FSYNC], err[FF_FSYNC], memory_order_relaxed);
    atomic_store_explicit(&ff_errno_of[FF_WRITE], err[FF_WRITE], memory_order_relaxed);
}

/* Every caller sees a state read from the file at most FF_CHECK_NS before its call (plus the time of
 * one read): a caller that finds the state due waits for the thread re-reading it. */
static void ff_refresh(void)
{
    pthread_once(&ff_once, ff_init);
    long long now = ff_now();
    if (now < atomic_load_explicit(&ff_next_check, memory_order_acquire))
        return;
    pthread_mutex_lock(&ff_ctl_lock);
    if (now >= atomic_load_explicit(&ff_next_check, memory_order_relaxed)) {
        ff_reload(now);
        atomic_store_explicit(&ff_next_check, ff_now() + FF_CHECK_NS, memory_order_release);
    }
    pthread_mutex_unlock(&ff_ctl_lock);
}

static void ff_note(const char *op, int fd, int e)
{
    if (!ff_log)
        return;
    char line[160], num[16];
    int n = snprintf(line, sizeof line, "faultfs: pid %d %s fd %d %s\n", (int)getpid(), op, fd,
                     ff_errno_name(e, num, sizeof num));
    int lfd = real_open()(ff_log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (lfd < 0)
        return;
    if (n > 0)
        (void)!real_write()(lfd, line, (size_t)n);
    real_close()(lfd);
}

/* The errno to fail this call with, or 0. errno itself is kept. */
static int ff_fault(int fd, int kind, const char *op)
{
    if (!ff_tracked(fd))
        return 0;
    int saved = errno;
    ff_refresh();
    int e = atomic_load_explicit(&ff_errno_of[kind], memory_order_relaxed);
    if (e) {
        struct stat st;
        if (fstat(fd, &st) != 0 || st.st_dev != ff_fds[fd].dev || st.st_ino != ff_fds[fd].ino) {
            ff_untrack(fd); /* closed behind our back and reused */
            e = 0;
        } else {
            ff_note(op, fd, e);
        }
    }
    errno = saved;
    return e;
}

static size_t ff_iov_len(const struct iovec *iov, int n)
{
    size_t total = 0;
    for (int i = 0; iov && i < n; i++)
        total += iov[i].iov_len;
    return total;
}

/* ---- opening and closing ---- */

static int ff_needs_mode(int flags)
{
    return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE;
}

#define FF_MODE_ARG(last, flags)                                                                                       \
    unsigned int mode = 0;                                                                                             \
    if (ff_needs_mode(flags)) {                                                                                        \
        va_list ap;                                                                                                    \
        va_start(ap, last);                                                                                            \
        mode = va_arg(ap, unsigned int);                                                                               \
        va_end(ap);                                                                                                    \
    }

FF_EXPORT int open(const char *path, int flags, ...)
{
    FF_MODE_ARG(flags, flags);
    int fd = real_open()(path, flags, mode);
    ff_opened(fd, path);
    return fd;
}

FF_EXPORT int open64(const char *path, int flags, ...)
{
    FF_MODE_ARG(flags, flags);
    int fd = real_open64()(path, flags, mode);
    ff_opened(fd, path);
    return fd;
}

FF_EXPORT int openat(int dirfd, const char *path, int flags, ...)
{
    FF_MODE_ARG(flags, flags);
    int fd = real_openat()(dirfd, path, flags, mode);
    ff_opened(fd, path);
    return fd;
}

FF_EXPORT int openat64(int dirfd, const char *path, int flags, ...)
{
    FF_MODE_ARG(flags, flags);
    int fd = real_openat64()(dirfd, path, flags, mode);
    ff_opened(fd, path);
    return fd;
}

FF_EXPORT int __open_2(const char *path, int flags)
{
    int fd = real___open_2()(path, flags);
    ff_opened(fd, path);
    return fd;
}

FF_EXPORT int __open64_2(const char *path, int flags)
{
    int fd = real___open64_2()(path, flags);
    ff_opened(fd, path);
    return fd;
}

FF_EXPORT int __openat_2(int dirfd, const char *path, int flags)
{
    int fd = real___openat_2()(dirfd, path, flags);
    ff_opened(fd, path);
    return fd;
}

FF_EXPORT int __openat64_2(int dirfd, const char *path, int flags)
{
    int fd = real___openat64_2()(dirfd, path, flags);
    ff_opened(fd, path);
    return fd;
}

FF_EXPORT int creat(const char *path, mode_t mode)
{
    int fd = real_creat()(path, mode);
    ff_opened(fd, path);
    return fd;
}

FF_EXPORT int creat64(const char *path, mode_t mode)
{
    int fd = real_creat64()(path, mode);
    ff_opened(fd, path);
    return fd;
}

/* Forgotten before the real close: once it is closed, another thread may get the same number. */
FF_EXPORT int close(int fd)
{
    ff_untrack(fd);
    return real_close()(fd);
}

FF_EXPORT int dup(int fd)
{
    int r = real_dup()(fd);
    ff_copy(fd, r);
    return r;
}

FF_EXPORT int dup2(int fd, int to)
{
    int r = real_dup2()(fd, to);
    ff_copy(fd, r);
    return r;
}

FF_EXPORT int dup3(int fd, int to, int flags)
{
    int r = real_dup3()(fd, to, flags);
    ff_copy(fd, r);
    return r;
}

/* The third argument, whatever its type (int, pointer or none), is passed on as one word. */
FF_EXPORT int fcntl(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    int r = real_fcntl()(fd, cmd, arg);
    if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)
        ff_copy(fd, r);
    return r;
}

FF_EXPORT int fcntl64(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    int r = real_fcntl64()(fd, cmd, arg);
    if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)
        ff_copy(fd, r);
    return r;
}

/* ---- writing ---- */

#define FF_FAIL(kind, op)                                                                                              \
    do {                                                                                                               \
        int e_ = ff_fault(fd, kind, op);                                                                               \
        if (e_) {                                                                                                      \
            errno = e_;                                                                                                \
            return -1;                                                                                                 \
        }                                                                                                              \
    } while (0)

FF_EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
    if (n > 0)
        FF_FAIL(FF_WRITE, "write");
    return real_write()(fd, buf, n);
}

FF_EXPORT ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    if (n > 0)
        FF_FAIL(FF_WRITE, "pwrite");
    return real_pwrite()(fd, buf, n, off);
}

FF_EXPORT ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
    if (n > 0)
        FF_FAIL(FF_WRITE, "pwrite64");
    return real_pwrite64()(fd, buf, n, off);
}

FF_EXPORT ssize_t writev(int fd, const struct iovec *iov, int n)
{
    if (ff_tracked(fd) && ff_iov_len(iov, n) > 0)
        FF_FAIL(FF_WRITE, "writev");
    return real_writev()(fd, iov, n);
}

FF_EXPORT ssize_t pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
    if (ff_tracked(fd) && ff_iov_len(iov, n) > 0)
        FF_FAIL(FF_WRITE, "pwritev");
    return real_pwritev()(fd, iov, n, off);
}

FF_EXPORT ssize_t pwritev64(int fd, const struct iovec *iov, int n, off64_t off)
{
    if (ff_tracked(fd) && ff_iov_len(iov, n) > 0)
        FF_FAIL(FF_WRITE, "pwritev64");
    return real_pwritev64()(fd, iov, n, off);
}

FF_EXPORT ssize_t pwritev2(int fd, const struct iovec *iov, int n, off_t off, int flags)
{
    if (ff_tracked(fd) && ff_iov_len(iov, n) > 0)
        FF_FAIL(FF_WRITE, "pwritev2");
    return real_pwritev2()(fd, iov, n, off, flags);
}

FF_EXPORT ssize_t pwritev64v2(int fd, const struct iovec *iov, int n, off64_t off, int flags)
{
    if (ff_tracked(fd) && ff_iov_len(iov, n) > 0)
        FF_FAIL(FF_WRITE, "pwritev64v2");
    return real_pwritev64v2()(fd, iov, n, off, flags);
}

FF_EXPORT int fallocate(int fd, int mode, off_t off, off_t len)
{
    FF_FAIL(FF_WRITE, "fallocate");
    return real_fallocate()(fd, mode, off, len);
}

FF_EXPORT int fallocate64(int fd, int mode, off64_t off, off64_t len)
{
    FF_FAIL(FF_WRITE, "fallocate64");
    return real_fallocate64()(fd, mode, off, len);
}

/* posix_fallocate returns the error instead of setting errno. */
FF_EXPORT int posix_fallocate(int fd, off_t off, off_t len)
{
    int e = ff_fault(fd, FF_WRITE, "posix_fallocate");
    return e ? e : real_posix_fallocate()(fd, off, len);
}

FF_EXPORT int posix_fallocate64(int fd, off64_t off, off64_t len)
{
    int e = ff_fault(fd, FF_WRITE, "posix_fallocate64");
    return e ? e : real_posix_fallocate64()(fd, off, len);
}

/* ---- syncing ---- */

FF_EXPORT int fsync(int fd)
{
    FF_FAIL(FF_FSYNC, "fsync");
    return real_fsync()(fd);
}

FF_EXPORT int fdatasync(int fd)
{
    FF_FAIL(FF_FSYNC, "fdatasync");
    return real_fdatasync()(fd);
}

FF_EXPORT int sync_file_range(int fd, off64_t off, off64_t n, unsigned int flags)
{
    FF_FAIL(FF_FSYNC, "sync_file_range");
    return real_sync_file_range()(fd, off, n, flags);
}
