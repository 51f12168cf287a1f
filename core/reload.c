#include "reload.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* What loading a generation in a scratch state found. */
typedef struct load_result_s {
    int nroutes; /* -1: it does not load (err says why) */
    char err[TR_ERROR_MAX];
    char environment[TR_SCRIPT_ENV_MAX]; /* tr_gen_environment's JSON */
    char warnings[TR_ERROR_MAX];         /* one per line */
} load_result_t;

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
 * Load generation `generation` from dir in a scratch state, as the workers' user: loading runs the
 * app's route files and the top level of its modules, which must not run as root in the master. With
 * a user to switch to (--user), the load happens in a child process that switches first and hands the
 * result back through a pipe; the master waits for it, as it waited for the load in its own state.
 */
static void load_as_worker_user(const tr_config_t *cfg, uint64_t generation, const char *dir, load_result_t *out)
{
    memset(out, 0, sizeof(*out));
    if (!cfg->run_as.change) {
        load_scratch(cfg, generation, dir, out);
        return;
    }
    out->nroutes = -1;
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) {
        snprintf(out->err, sizeof(out->err), "preflight: pipe: %s", strerror(errno));
        return;
    }
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(out->err, sizeof(out->err), "preflight: fork: %s", strerror(errno));
        close(pipefd[0]);
        close(pipefd[1]);
        return;
    }
    if (pid == 0) {
        close(pipefd[0]);
        if (tr_privilege_drop(&cfg->run_as, out->err, sizeof(out->err)) == 0)
            load_scratch(cfg, generation, dir, out);
        const char *p = (const char *)out;
        size_t left = sizeof(*out);
        while (left > 0) {
            ssize_t n = write(pipefd[1], p, left);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            p += n, left -= (size_t)n;
        }
        _exit(0);
    }
    close(pipefd[1]);
    char *p = (char *)out;
    size_t got = 0;
    while (got < sizeof(*out)) {
        ssize_t n = read(pipefd[0], p + got, sizeof(*out) - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(pipefd[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (got != sizeof(*out)) {
        memset(out, 0, sizeof(*out));
        out->nroutes = -1;
        snprintf(out->err, sizeof(out->err), "preflight: the loading process (user %s) %s %d", cfg->run_as.name,
                 WIFSIGNALED(status) ? "was killed by signal" : "exited with status",
                 WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
        return;
    }
    out->err[sizeof(out->err) - 1] = out->environment[sizeof(out->environment) - 1] = '\0';
    out->warnings[sizeof(out->warnings) - 1] = '\0';
}

/* Snapshot generation `generation` and load it in a scratch state. Returns its route count, or -1
 * with a message in err (the snapshot is removed then). */
static int preflight(tr_reloader_t *r, uint64_t generation, uint64_t *hash, char *err, size_t err_size)
{
    char dir[4096];
    code_dir(r, generation, dir, sizeof(dir));
    if (tr_snapshot_take(r->cfg->app_dir, dir, hash, err, err_size) != 0) {
        tr_snapshot_remove(dir);
        return -1;
    }
    static load_result_t result; /* 8 KiB: not on the stack of the master's loop */
    load_as_worker_user(r->cfg, generation, dir, &result);
    if (result.nroutes < 0) {
        snprintf(err, err_size, "%s", result.err);
        tr_snapshot_remove(dir);
        return -1;
    }
    memcpy(r->pending_environment, result.environment, sizeof(r->pending_environment));
    for (char *line = strtok(result.warnings, "\n"); line != NULL; line = strtok(NULL, "\n"))
        tr_log_error("generation %llu: warning: %s", (unsigned long long)generation, line);
    return result.nroutes;
}

/*
 * Preflight the tree as it is now: compile every script, run the route files, build the router.
 * Only a tree that passes (and passes --reload-check) is published.
 */
static void start(tr_reloader_t *r)
{
    if (r->stopping)
        return;
    if (r->reloading) {
        r->reload_again = 1;
        return;
    }
    char err[TR_ERROR_MAX];
    uint64_t next = r->shared->generation + 1, hash;
    if (preflight(r, next, &hash, err, sizeof(err)) < 0) {
        rejected(r, err);
        return;
    }
    if (r->cfg->reload_check == NULL) {
        publish(r, next);
        return;
    }
    r->pending_generation = next;
    r->pending_hash = hash;
    r->reloading = 1;
    char why[512];
    if (start_check(r, why, sizeof(why)) != 0) {
        char dir[4096];
        tr_snapshot_remove(code_dir(r, next, dir, sizeof(dir)));
        snprintf(err, sizeof(err), "--reload-check could not be started: %s", why);
        rejected(r, err);
        done(r);
    }
}

void tr_reload_start(tr_reloader_t *r)
{
    start(r);
}

int tr_reload_reap(tr_reloader_t *r, pid_t pid, int status)
{
    if (pid != r->check_pid || pid <= 0)
        return 0;
    check_finished(r, status);
    return 1;
}

void tr_reload_stop(tr_reloader_t *r)
{
    r->stopping = 1;
    if (r->check_pid > 0)
        kill(-r->check_pid, SIGKILL);
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
    r->check_fd = -1;
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
    int nroutes = preflight(r, 1, &hash, err, err_size);
    if (nroutes < 0)
        tr_snapshot_remove(shared->code_root);
    else
        memcpy(shared->script_environment, r->pending_environment, sizeof(shared->script_environment));
    return nroutes;
}
