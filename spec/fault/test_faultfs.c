/* The fault-injection shim (faultfs.c) on its own: run with LD_PRELOAD=<the shim> and
 * TRIAGE_FAULT_CONTROL, TRIAGE_FAULT_LOG set (spec/fault/fault.cmake does), argv[1] a scratch
 * directory. Which calls fail and how, which descriptors count (matching paths, their duplicates,
 * not a reused number), the control file's syntax, threads and fork. Prints "ok - ..." or
 * "FAIL - ..." per check; exits 1 if any failed. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int failures;
static const char *control;
static char dir[512];

static void check(int ok, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%s - ", ok ? "ok" : "FAIL");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    if (!ok)
        failures++;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Replace the control file in one step (or remove it: text NULL), then wait out the shim's 2 ms. */
static void set_control(const char *text)
{
    if (!text) {
        unlink(control);
    } else {
        char tmp[600];
        snprintf(tmp, sizeof tmp, "%s.tmp", control);
        FILE *f = fopen(tmp, "w");
        if (!f) {
            perror(tmp);
            exit(2);
        }
        fputs(text, f);
        fclose(f);
        rename(tmp, control);
    }
    sleep_ms(20);
}

static char *path_of(const char *name)
{
    static char buf[4][700];
    static int i;
    char *p = buf[i++ % 4];
    snprintf(p, 700, "%s/%s", dir, name);
    return p;
}

static off_t size_of(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 ? st.st_size : -1;
}

/* write() on fd: 0 on success, else the errno */
static int try_write(int fd)
{
    errno = 0;
    ssize_t r = write(fd, "abcd", 4);
    return r == 4 ? 0 : errno ? errno : -1;
}

static int try_fsync(int fd)
{
    errno = 0;
    return fsync(fd) == 0 ? 0 : errno;
}

static void test_writes(void)
{
    int db = open(path_of("triage.db"), O_RDWR | O_CREAT | O_TRUNC, 0644);
    int wal = openat(AT_FDCWD, path_of("triage.db-wal"), O_RDWR | O_CREAT | O_TRUNC, 0644);
    int made = creat(path_of("x-triage.db-shm"), 0644);
    int other = open(path_of("other.db"), O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (db < 0 || wal < 0 || made < 0 || other < 0) {
        perror("open");
        exit(2);
    }

    set_control(NULL);
    check(try_write(db) == 0 && try_fsync(db) == 0, "no control file: write and fsync succeed");
    set_control("");
    check(try_write(db) == 0 && try_fsync(db) == 0, "empty control file: write and fsync succeed");

    set_control("write=ENOSPC\n");
    off_t before = size_of(db);
    check(try_write(db) == ENOSPC, "write=ENOSPC: write fails with ENOSPC");
    check(try_write(wal) == ENOSPC, "write=ENOSPC: a file opened with openat fails too");
    check(try_write(made) == ENOSPC, "write=ENOSPC: a file made with creat fails too");
    errno = 0;
    check(pwrite(db, "x", 1, 0) == -1 && errno == ENOSPC, "pwrite fails with ENOSPC");
    errno = 0;
    check(pwrite64(db, "x", 1, 1 << 20) == -1 && errno == ENOSPC, "pwrite64 fails with ENOSPC");
    struct iovec iov[2] = {{"ab", 2}, {"cd", 2}};
    errno = 0;
    check(writev(db, iov, 2) == -1 && errno == ENOSPC, "writev fails with ENOSPC");
    errno = 0;
    check(pwritev(db, iov, 2, 0) == -1 && errno == ENOSPC, "pwritev fails with ENOSPC");
    check(write(db, "", 0) == 0, "a zero-length write still succeeds");
    struct iovec none[1] = {{"", 0}};
    check(writev(db, none, 1) == 0, "a zero-length writev still succeeds");
    check(posix_fallocate(db, 0, 1 << 20) == ENOSPC, "posix_fallocate returns ENOSPC");
    errno = 0;
    check(fallocate(db, 0, 0, 1 << 20) == -1 && errno == ENOSPC, "fallocate fails with ENOSPC");
    check(size_of(db) == before, "nothing was written (size %lld, was %lld)", (long long)size_of(db),
          (long long)before);
    check(try_fsync(db) == 0, "write=ENOSPC alone: fsync succeeds");
    check(try_write(other) == 0, "a file whose path does not match is not touched");

    set_control("fsync=EIO");
    check(try_fsync(db) == EIO, "fsync=EIO: fsync fails with EIO");
    errno = 0;
    check(fdatasync(wal) == -1 && errno == EIO, "fdatasync fails with EIO");
    errno = 0;
    check(sync_file_range(db, 0, 0, SYNC_FILE_RANGE_WRITE) == -1 && errno == EIO, "sync_file_range fails with EIO");
    check(try_write(db) == 0, "fsync=EIO alone: write succeeds");
    check(try_fsync(other) == 0, "fsync of a file that does not match succeeds");

    set_control("# both at once\nfsync=5, write=ENOSPC;\n");
    check(try_fsync(db) == EIO && try_write(db) == ENOSPC, "two faults, a number, a comment");
    set_control("write=ENOSPC fsync=none");
    check(try_fsync(db) == 0 && try_write(db) == ENOSPC, "fsync=none clears that fault only");
    set_control("write=EDQUOT");
    check(try_write(db) == EDQUOT, "another errno by name (EDQUOT)");
    set_control("write=off");
    check(try_write(db) == 0, "write=off clears it");
    set_control("bogus tokens write=NOTANERRNO");
    check(try_write(db) == 0 && try_fsync(db) == 0, "what is not understood is ignored");

    /* duplicates */
    set_control("write=ENOSPC fsync=EIO");
    int d1 = dup(db);
    int d2 = dup2(db, 200);
    int d3 = dup3(db, 201, O_CLOEXEC);
    int d4 = fcntl(db, F_DUPFD, 300);
    int d5 = fcntl(db, F_DUPFD_CLOEXEC, 400);
    check(d1 >= 0 && try_write(d1) == ENOSPC && try_fsync(d1) == EIO, "dup: the copy fails too");
    check(d2 == 200 && try_write(d2) == ENOSPC, "dup2: the copy fails too");
    check(d3 == 201 && try_write(d3) == ENOSPC, "dup3: the copy fails too");
    check(d4 >= 300 && try_write(d4) == ENOSPC, "fcntl(F_DUPFD): the copy fails too");
    check(d5 >= 400 && try_write(d5) == ENOSPC, "fcntl(F_DUPFD_CLOEXEC): the copy fails too");
    check(fcntl(db, F_GETFD) >= 0 && fcntl(d5, F_GETFD) == FD_CLOEXEC, "other fcntl commands pass through");
    dup2(other, d2);
    check(try_write(d2) == 0, "dup2 of another file over a tracked number: not tracked any more");
    close(d1);
    check(try_write(d3) == ENOSPC, "closing one copy leaves the others tracked");

    /* a number reused behind the shim's back: closed and taken by a pipe through system calls */
    int n = d4;
    int p[2];
    if (pipe(p) != 0) {
        perror("pipe");
        exit(2);
    }
    syscall(SYS_close, n);
    syscall(SYS_dup3, p[1], n, 0);
    errno = 0;
    check(write(n, "z", 1) == 1, "a pipe on a tracked number reused behind the shim's back is not touched");
    close(n);
    close(p[0]);
    close(p[1]);

    /* close then reopen a number on a file that does not match */
    int num = d5;
    close(d5);
    int again = open(path_of("plain.txt"), O_RDWR | O_CREAT, 0644);
    int moved = again == num ? again : dup2(again, num);
    check(moved == num && try_write(num) == 0, "a number closed and reopened on another file is not touched");
    if (again != num)
        close(again);
    close(num);

    set_control(NULL);
    check(try_write(db) == 0 && try_fsync(db) == 0 && try_write(d3) == 0, "cleared: everything succeeds again");
    close(d2);
    close(d3);
    close(db);
    close(wal);
    close(made);
    close(other);
}

/* ---- threads ---- */

#define THREADS 8
#define WRITES 200
static pthread_barrier_t barrier;

struct worker {
    int fd;
    int ok, enospc, other;
};

static void *writer(void *arg)
{
    struct worker *w = arg;
    pthread_barrier_wait(&barrier);
    for (int i = 0; i < WRITES; i++) {
        int e = try_write(w->fd);
        if (e == 0)
            w->ok++;
        else if (e == ENOSPC)
            w->enospc++;
        else
            w->other++;
    }
    return NULL;
}

static void run_threads(struct worker *ws)
{
    pthread_t t[THREADS];
    pthread_barrier_init(&barrier, NULL, THREADS);
    for (int i = 0; i < THREADS; i++) {
        ws[i].ok = ws[i].enospc = ws[i].other = 0;
        pthread_create(&t[i], NULL, writer, &ws[i]);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&barrier);
}

static void test_threads(void)
{
    struct worker ws[THREADS];
    for (int i = 0; i < THREADS; i++) {
        char name[64];
        snprintf(name, sizeof name, "t%d-triage.db", i);
        ws[i].fd = open(path_of(name), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    }
    set_control("write=ENOSPC");
    run_threads(ws);
    int all = 1;
    for (int i = 0; i < THREADS; i++)
        all = all && ws[i].enospc == WRITES;
    check(all, "%d threads writing at once under write=ENOSPC: every write fails with ENOSPC", THREADS);
    set_control(NULL);
    run_threads(ws);
    all = 1;
    for (int i = 0; i < THREADS; i++)
        all = all && ws[i].ok == WRITES;
    check(all, "%d threads after the fault is cleared: every write succeeds", THREADS);

    /* the fault switched on and off while they write: each write either succeeds or gets ENOSPC */
    pthread_t t[THREADS];
    pthread_barrier_init(&barrier, NULL, THREADS + 1);
    for (int i = 0; i < THREADS; i++) {
        ws[i].ok = ws[i].enospc = ws[i].other = 0;
        pthread_create(&t[i], NULL, writer, &ws[i]);
    }
    pthread_barrier_wait(&barrier);
    for (int k = 0; k < 6; k++)
        set_control(k % 2 ? NULL : "write=ENOSPC");
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&barrier);
    int other = 0;
    for (int i = 0; i < THREADS; i++)
        other += ws[i].other;
    check(other == 0, "toggled while %d threads write: no error other than ENOSPC", THREADS);
    set_control(NULL);
    for (int i = 0; i < THREADS; i++)
        close(ws[i].fd);
}

static void test_fork(void)
{
    int db = open(path_of("fork-triage.db"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    set_control(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        /* the child inherits the tracked descriptor and reads the control file itself */
        int a = try_write(db);
        set_control("write=ENOSPC");
        int b = try_write(db);
        set_control(NULL);
        int c = try_write(db);
        _exit(a == 0 && b == ENOSPC && c == 0 ? 0 : 1);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    check(WIFEXITED(st) && WEXITSTATUS(st) == 0, "after fork: the child's inherited descriptor is tracked");
    close(db);
}

static void test_log(const char *log)
{
    if (!log || !*log) {
        check(1, "TRIAGE_FAULT_LOG (skipped: not set)");
        return;
    }
    FILE *f = fopen(log, "r");
    char line[256];
    int writes = 0, syncs = 0, bad = 0;
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, "faultfs: pid ", 13) != 0)
            bad++;
        else if (strstr(line, " write fd ") && strstr(line, " ENOSPC"))
            writes++;
        else if (strstr(line, " fsync fd ") && strstr(line, " EIO"))
            syncs++;
    }
    if (f)
        fclose(f);
    check(writes > 0 && syncs > 0 && bad == 0, "TRIAGE_FAULT_LOG names each injected fault (%d write, %d fsync)",
          writes, syncs);
}

int main(int argc, char **argv)
{
    control = getenv("TRIAGE_FAULT_CONTROL");
    const char *preload = getenv("LD_PRELOAD");
    if (argc < 2 || !control || !*control || !preload || !strstr(preload, "faultfs")) {
        fprintf(stderr, "usage: LD_PRELOAD=libtriage_faultfs.so TRIAGE_FAULT_CONTROL=FILE %s SCRATCH_DIR\n", argv[0]);
        return 2;
    }
    snprintf(dir, sizeof dir, "%s", argv[1]);
    mkdir(dir, 0755);
    const char *log = getenv("TRIAGE_FAULT_LOG");
    if (log)
        unlink(log);
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_writes();
    test_threads();
    test_fork();
    test_log(log);
    set_control(NULL);
    printf("%s\n", failures ? "some checks failed" : "all checks passed");
    return failures ? 1 : 0;
}
