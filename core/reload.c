#include "reload.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "lua_vm.h"
#include "privilege.h"
#include "snapshot.h"
#include "spawn.h"

#define CHECK_TIMEOUT 300.0
#define CHECK_OUTPUT_MAX (TR_ERROR_MAX - 256)

static void start(tr_reloader_t *r);

/* Where generation `generation`'s snapshot of the code lives. */
static const char *code_dir(const tr_reloader_t *r, uint64_t generation, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%llu", r->shared->code_root, (unsigned long long)generation);
    return buf;
}

static void rejected(tr_reloader_t *r, const char *error)
{
    snprintf(r->shared->last_reload_error, sizeof(r->shared->last_reload_error), "%s", error);
    r->shared->reload_failures++;
    r->shared->last_reload_at = tr_wall_clock();
    tr_log_error("reload rejected, the running code stays: %s", error);
    r->cb.finished(r->data, 0, r->shared->generation, error);
}

static void publish(tr_reloader_t *r, uint64_t generation)
{
    tr_shared_t *sh = r->shared;
    sh->generation = generation;
    sh->generation_loaded_at = tr_wall_clock();
    sh->last_reload_at = sh->generation_loaded_at;
    sh->last_reload_error[0] = '\0';
    sh->reloads++;
    memcpy(sh->script_environment, r->pending_environment, sizeof(sh->script_environment));
    r->cb.published(r->data, generation);
    tr_log_info("generation %llu published", (unsigned long long)generation);
    r->cb.finished(r->data, 1, generation, NULL);
    if (generation > 3) { /* a worker still loading a snapshot this old would be three reloads late */
        char dir[4096];
        tr_snapshot_remove(code_dir(r, generation - 3, dir, sizeof(dir)));
    }
}

static void done(tr_reloader_t *r)
{
    r->reloading = 0;
    if (r->reload_again) {
        r->reload_again = 0;
        start(r);
    }
}

static void on_check_output(struct ev_loop *loop, ev_io *io, int revents)
{
    tr_reloader_t *r = io->data;
    char tmp[4096];
    (void)revents;
    ssize_t n = read(r->check_fd, tmp, sizeof(tmp));
    if (n > 0) {
        /* Keep the tail: that is where test runners print their verdict. */
        tr_buf_t *out = &r->check_output;
        if (out->len + (size_t)n > CHECK_OUTPUT_MAX) {
            size_t drop = out->len + (size_t)n - CHECK_OUTPUT_MAX;
            if (drop > out->len)
                drop = out->len;
            memmove(out->data, out->data + drop, out->len - drop);
            out->len -= drop;
        }
        tr_buf_append(&r->bufs, out, tmp, (size_t)n > CHECK_OUTPUT_MAX ? CHECK_OUTPUT_MAX : (size_t)n);
    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        ev_io_stop(loop, io);
        close(r->check_fd);
        r->check_fd = -1;
    }
}

static void on_check_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    tr_reloader_t *r = t->data;
    (void)loop, (void)revents;
    if (r->check_pid > 0)
        kill(-r->check_pid, SIGKILL);
}

static void check_finished(tr_reloader_t *r, int status)
{
    r->check_pid = 0;
    ev_timer_stop(r->loop, &r->check_timeout);
    if (r->check_fd >= 0) { /* collect what is left in the pipe */
        ev_io_stop(r->loop, &r->check_io);
        fcntl(r->check_fd, F_SETFL, 0);
        while (r->check_fd >= 0)
            on_check_output(r->loop, &r->check_io, 0);
    }
    tr_buf_append(&r->bufs, &r->check_output, "", 1);
    char dir[4096];
    code_dir(r, r->pending_generation, dir, sizeof(dir));
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        if (tr_snapshot_tree_hash(r->cfg->app_dir) == r->pending_hash) {
            publish(r, r->pending_generation);
        } else {
            /* What passed is not what is on disk any more: check the new tree before anything goes live. */
            tr_log_info("the code changed while --reload-check ran; checking the new tree");
            tr_snapshot_remove(dir);
            r->reload_again = 1;
        }
    } else {
        tr_snapshot_remove(dir);
        char msg[TR_ERROR_MAX];
        snprintf(msg, sizeof(msg), "--reload-check '%s' %s %d:\n%s", r->cfg->reload_check,
                 WIFEXITED(status) ? "exited with status" : "was killed by signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), r->check_output.data);
        rejected(r, msg);
    }
    tr_buf_release(&r->bufs, &r->check_output);
    done(r);
}

/* Run --reload-check in the app directory, its output collected from a pipe. */
static int start_check(tr_reloader_t *r, char *err, size_t err_size)
{
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) {
        snprintf(err, err_size, "pipe: %s", strerror(errno));
        return -1;
    }
    tr_spawn_opts_t opts = {.cwd = r->cfg->app_dir,
                            .stdout_fd = pipefd[1],
                            .env_name = "TRIAGE_APP",
                            .env_value = r->cfg->app_dir,
                            .new_process_group = 1};
    pid_t pid = tr_spawn_shell(r->cfg->reload_check, &opts, err, err_size);
    close(pipefd[1]);
    if (pid < 0) {
        close(pipefd[0]);
        return -1;
    }
    fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
    r->check_pid = pid;
    r->check_fd = pipefd[0];
    ev_io_init(&r->check_io, on_check_output, r->check_fd, EV_READ);
    r->check_io.data = r;
    ev_io_start(r->loop, &r->check_io);
    ev_timer_init(&r->check_timeout, on_check_timeout, CHECK_TIMEOUT, 0.);
    r->check_timeout.data = r;
    ev_timer_start(r->loop, &r->check_timeout);
    return 0;
}

static double load_budget(const tr_config_t *cfg)
{
    return tr_config_load_budget(cfg->handler_timeout);
}

/* What loading a generation in a scratch state found: written whole by the preflight's child to its
 * pipe. */
typedef struct load_result_s {
    int nroutes; /* -1: it does not load (err says why) */
    char err[TR_ERROR_MAX];
    char environment[TR_SCRIPT_ENV_MAX]; /* tr_gen_environment's JSON */
    char warnings[TR_ERROR_MAX];         /* one per line */
} load_result_t;

/* The preflight's result as it arrives (one preflight at a time; 8 KiB, not on the loop's stack). */
static load_result_t result;
static size_t result_len;

static void load_scratch(const tr_config_t *cfg, uint64_t generation, const char *dir, load_result_t *out)
{
    tr_gen_t *gen = tr_gen_new(cfg, generation, dir, NULL, 0, out->err, sizeof(out->err));
    if (gen == NULL) {
        out->nroutes = -1;
        return;
    }
    out->nroutes = (int)tr_router_count(gen->router);
    tr_gen_environment(gen, out->environment, sizeof(out->environment), out->warnings, sizeof(out->warnings));
    tr_gen_free(gen);
}

/*
 * Load the snapshot in dir in a child process, as the workers' user (--user): loading runs the app's
 * route files and the top level of its modules, which must not run as root, nor in the master, where
 * a loop at load time would stop the server. The child writes its load_result_t whole to a pipe whose
 * read end is returned at *fd. Returns its pid, or -1 with a message in err.
 */
static pid_t spawn_preflight(tr_reloader_t *r, uint64_t generation, const char *dir, int *fd, char *err,
                             size_t err_size)
{
    int pipefd;
    pid_t pid = tr_spawn_fork_piped(&pipefd, err, err_size);
    if (pid < 0)
        return -1;
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        /* The app's code runs here: nothing of the master's (the listening and admin sockets, the
         * signalfd, the store's lock) is left open to it but the pipe and the error log. */
        int keep[2] = {pipefd, tr_log_error_fd()};
        if (keep[0] > keep[1]) {
            int t = keep[0];
            keep[0] = keep[1];
            keep[1] = t;
        }
        close_range(3, keep[0] > 3 ? (unsigned)keep[0] - 1 : 2, 0);
        close_range((unsigned)keep[0] + 1, keep[1] > keep[0] + 1 ? (unsigned)keep[1] - 1 : (unsigned)keep[0], 0);
        close_range((unsigned)keep[1] + 1, ~0U, 0);
        load_result_t *out = &result;
        memset(out, 0, sizeof(*out));
        out->nroutes = -1;
        if (tr_privilege_drop(&r->cfg->run_as, out->err, sizeof(out->err)) == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL); /* (after the change of user, which clears it) */
            load_scratch(r->cfg, generation, dir, out);
        }
        const char *p = (const char *)out;
        size_t left = sizeof(*out);
        while (left > 0) {
            ssize_t n = write(pipefd, p, left);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            p += n, left -= (size_t)n;
        }
        _exit(0);
    }
    *fd = pipefd;
    result_len = 0;
    return pid;
}

/* Read what the preflight's child has written (blocking or not, as fd is). Returns 0 at the end of
 * its output (fd is closed then), 1 while more may come. */
static int read_result(int fd)
{
    for (;;) {
        ssize_t n = read(fd, (char *)&result + result_len, sizeof(result) - result_len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return 1;
        if (n > 0) {
            result_len += (size_t)n;
            if (result_len < sizeof(result))
                continue;
        }
        close(fd);
        return 0;
    }
}

/* The preflight's verdict from its exit status and what it wrote: its route count (its script
 * environment in r->pending_environment, its warnings logged), or -1 with the reason in err. */
static int preflight_verdict(tr_reloader_t *r, uint64_t generation, int status, char *err, size_t err_size)
{
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && result_len == sizeof(result)) {
        result.err[sizeof(result.err) - 1] = result.environment[sizeof(result.environment) - 1] = '\0';
        result.warnings[sizeof(result.warnings) - 1] = '\0';
        if (result.nroutes < 0) {
            snprintf(err, err_size, "%s", result.err);
            return -1;
        }
        memcpy(r->pending_environment, result.environment, sizeof(r->pending_environment));
        for (char *line = strtok(result.warnings, "\n"); line != NULL; line = strtok(NULL, "\n"))
            tr_log_error("generation %llu: warning: %s", (unsigned long long)generation, line);
        return result.nroutes;
    }
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        snprintf(err, err_size,
                 "loading the application took longer than %.0f s (3 x --handler-timeout, at least 5 s): an endless "
                 "loop when a script or route file is loaded?",
                 load_budget(r->cfg));
    else if (WIFSIGNALED(status))
        snprintf(err, err_size, "loading the application crashed (signal %d)", WTERMSIG(status));
    else
        snprintf(err, err_size, "loading the application failed (exit status %d)", WEXITSTATUS(status));
    return -1;
}

/*
 * The first generation, before the master serves: snapshot and load it in a child, waiting for the
 * verdict here. Returns its route count, or -1 with a message in err (the snapshot is removed).
 */
static int preflight_now(tr_reloader_t *r, uint64_t generation, uint64_t *hash, char *err, size_t err_size)
{
    char dir[4096];
    code_dir(r, generation, dir, sizeof(dir));
    if (tr_snapshot_take(r->cfg->app_dir, dir, hash, err, err_size) != 0) {
        tr_snapshot_remove(dir);
        return -1;
    }
    int fd;
    pid_t pid = spawn_preflight(r, generation, dir, &fd, err, err_size);
    if (pid < 0) {
        tr_snapshot_remove(dir);
        return -1;
    }
    double deadline = tr_wall_clock() + load_budget(r->cfg);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    while (read_result(fd)) {
        int left = (int)((deadline - tr_wall_clock()) * 1000);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, left) == 0) {
            kill(pid, SIGKILL);
            close(fd);
            break;
        }
    }
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    int nroutes = preflight_verdict(r, generation, status, err, err_size);
    if (nroutes < 0)
        tr_snapshot_remove(dir);
    return nroutes;
}

static void on_preflight_output(struct ev_loop *loop, ev_io *io, int revents)
{
    tr_reloader_t *r = io->data;
    (void)revents;
    if (!read_result(r->preflight_fd)) {
        ev_io_stop(loop, io);
        r->preflight_fd = -1;
    }
}

static void on_preflight_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    tr_reloader_t *r = t->data;
    (void)loop, (void)revents;
    if (r->preflight_pid > 0)
        kill(r->preflight_pid, SIGKILL);
}

static void preflight_finished(tr_reloader_t *r, int status)
{
    r->preflight_pid = 0;
    ev_timer_stop(r->loop, &r->preflight_timeout);
    if (r->preflight_fd >= 0) { /* what is left in the pipe (the child has exited) */
        ev_io_stop(r->loop, &r->preflight_io);
        fcntl(r->preflight_fd, F_SETFL, 0);
        read_result(r->preflight_fd);
        r->preflight_fd = -1;
    }
    uint64_t next = r->pending_generation;
    char err[TR_ERROR_MAX], dir[4096];
    code_dir(r, next, dir, sizeof(dir));
    if (preflight_verdict(r, next, status, err, sizeof(err)) < 0) {
        tr_snapshot_remove(dir);
        rejected(r, err);
        done(r);
        return;
    }
    if (r->cfg->reload_check == NULL) {
        publish(r, next);
        done(r);
        return;
    }
    char why[512];
    if (start_check(r, why, sizeof(why)) != 0) {
        tr_snapshot_remove(dir);
        snprintf(err, sizeof(err), "--reload-check could not be started: %s", why);
        rejected(r, err);
        done(r);
    }
}

/*
 * Preflight the tree as it is now, in a child: compile every script, run the route files, build the
 * router. Only a tree that passes (and passes --reload-check) is published.
 */
static void start(tr_reloader_t *r)
{
    if (r->stopping)
        return;
    if (r->reloading) {
        r->reload_again = 1;
        return;
    }
    char err[TR_ERROR_MAX], dir[4096];
    uint64_t next = r->shared->generation + 1;
    code_dir(r, next, dir, sizeof(dir));
    int fd = -1;
    pid_t pid = -1;
    if (tr_snapshot_take(r->cfg->app_dir, dir, &r->pending_hash, err, sizeof(err)) == 0)
        pid = spawn_preflight(r, next, dir, &fd, err, sizeof(err));
    if (pid < 0) {
        tr_snapshot_remove(dir);
        rejected(r, err);
        return;
    }
    r->reloading = 1;
    r->pending_generation = next;
    r->preflight_pid = pid;
    r->preflight_fd = fd;
    fcntl(fd, F_SETFL, O_NONBLOCK);
    ev_io_init(&r->preflight_io, on_preflight_output, fd, EV_READ);
    r->preflight_io.data = r;
    ev_io_start(r->loop, &r->preflight_io);
    ev_timer_init(&r->preflight_timeout, on_preflight_timeout, load_budget(r->cfg), 0.);
    r->preflight_timeout.data = r;
    ev_timer_start(r->loop, &r->preflight_timeout);
}

void tr_reload_start(tr_reloader_t *r)
{
    start(r);
}

int tr_reload_reap(tr_reloader_t *r, pid_t pid, int status)
{
    if (pid <= 0)
        return 0;
    if (pid == r->preflight_pid) {
        preflight_finished(r, status);
        return 1;
    }
    if (pid != r->check_pid)
        return 0;
    check_finished(r, status);
    return 1;
}

void tr_reload_stop(tr_reloader_t *r)
{
    r->stopping = 1;
    if (r->check_pid > 0)
        kill(-r->check_pid, SIGKILL);
    if (r->preflight_pid > 0)
        kill(r->preflight_pid, SIGKILL);
}

void tr_reload_cleanup(tr_reloader_t *r)
{
    tr_snapshot_remove(r->shared->code_root);
}

int tr_reload_init(tr_reloader_t *r, struct ev_loop *loop, const tr_config_t *cfg, tr_shared_t *shared,
                   const tr_reload_callbacks_t *cb, void *data, char *err, size_t err_size)
{
    memset(r, 0, sizeof(*r));
    r->loop = loop;
    r->cfg = cfg;
    r->shared = shared;
    r->cb = *cb;
    r->data = data;
    r->check_fd = r->preflight_fd = -1;
    const char *tmp = getenv("TMPDIR");
    if (tmp == NULL || *tmp == '\0')
        tmp = "/tmp";
    snprintf(shared->code_root, sizeof(shared->code_root), "%s/triage-code-XXXXXX", tmp);
    if (mkdtemp(shared->code_root) == NULL) {
        snprintf(err, err_size, "cannot create a directory for code snapshots in %s: %s", tmp, strerror(errno));
        return -1;
    }
    /* The workers' user loads every generation from here, the preflight's included. */
    if (tr_privilege_share_dir(&cfg->run_as, shared->code_root, err, err_size) != 0 ||
        tr_privilege_check(&cfg->run_as, &(tr_privilege_paths_t){.code_root = shared->code_root}, err, err_size) != 0) {
        tr_snapshot_remove(shared->code_root);
        return -1;
    }
    uint64_t hash;
    int nroutes = preflight_now(r, 1, &hash, err, err_size);
    if (nroutes < 0)
        tr_snapshot_remove(shared->code_root);
    else
        memcpy(shared->script_environment, r->pending_environment, sizeof(shared->script_environment));
    return nroutes;
}
