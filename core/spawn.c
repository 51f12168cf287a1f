#include "spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* The kernel's struct sigaction (x86_64, aarch64 and the other asm-generic layouts). */
struct kernel_sigaction {
    void (*handler)(int);
    unsigned long flags;
    void (*restorer)(void);
    unsigned long mask;
};
#define KERNEL_NSIG 64

/* In the child, after fork: report errno (what failed) on the pipe and exit. */
static void child_fail(int report_fd, int stage)
{
    int msg[2] = {stage, errno};
    (void)!write(report_fd, msg, sizeof(msg));
    _exit(127);
}

enum { STAGE_CHDIR = 1, STAGE_EXEC };

static void child(const char *command, const tr_spawn_opts_t *opts, int report_fd)
{
    /* Default dispositions for every signal (SIG_IGN survives exec; handlers would not), then an
     * empty mask (the mask survives exec too). Through the system call: glibc's sigaction refuses
     * the two real-time signals it reserves (32, 33), which a parent may have left ignored. */
    struct kernel_sigaction dfl = {.handler = SIG_DFL};
    for (int sig = 1; sig <= KERNEL_NSIG; sig++)
        syscall(SYS_rt_sigaction, sig, &dfl, NULL, sizeof(dfl.mask)); /* SIGKILL, SIGSTOP: refused, fine */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (opts->new_process_group)
        setpgid(0, 0);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0 && devnull != 0) {
        dup2(devnull, 0);
        close(devnull);
    }
    if (opts->stdout_fd >= 0) {
        dup2(opts->stdout_fd, 1);
        dup2(opts->stdout_fd, 2);
    }
    if (opts->cwd != NULL && chdir(opts->cwd) != 0)
        child_fail(report_fd, STAGE_CHDIR);
    if (opts->env_name != NULL)
        setenv(opts->env_name, opts->env_value, 1);
    execl("/bin/sh", "sh", "-c", command, (char *)NULL);
    child_fail(report_fd, STAGE_EXEC);
}

pid_t tr_spawn_fork_piped(int *fd, char *err, size_t err_size)
{
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) {
        snprintf(err, err_size, "pipe: %s", strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, err_size, "fork: %s", strerror(errno));
        close(pipefd[0]);
        close(pipefd[1]);
        return -1;
    }
    close(pipefd[pid == 0 ? 0 : 1]);
    *fd = pipefd[pid == 0 ? 1 : 0];
    return pid;
}

pid_t tr_spawn_shell(const char *command, const tr_spawn_opts_t *opts, char *err, size_t err_size)
{
    int report;
    pid_t pid = tr_spawn_fork_piped(&report, err, err_size);
    if (pid < 0)
        return -1;
    if (pid == 0)
        child(command, opts, report);
    /* The pipe closes at exec (success) or carries what failed. */
    int msg[2];
    ssize_t n;
    do
        n = read(report, msg, sizeof(msg));
    while (n < 0 && errno == EINTR);
    close(report);
    if (n == (ssize_t)sizeof(msg)) {
        int status;
        waitpid(pid, &status, 0);
        snprintf(err, err_size, "%s: %s", msg[0] == STAGE_CHDIR ? opts->cwd : "/bin/sh", strerror(msg[1]));
        return -1;
    }
    return pid;
}
