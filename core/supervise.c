#include "supervise.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "guard.h"
#include "log.h"
#include "pool.h"
#include "worker.h"

#define CRASH_WINDOW 1.0 /* an exit this soon after starting counts as a crash on start */

static void spawn(tr_supervisor_t *s, int slot)
{
    pid_t pid = fork();
    if (pid < 0) {
        tr_log_error("fork: %s; retrying", strerror(errno));
        s->slots[slot].respawn_at = ev_now(s->loop) + 0.2;
        ev_timer_stop(s->loop, &s->respawn_timer);
        ev_timer_set(&s->respawn_timer, 0.2, 0.);
        ev_timer_start(s->loop, &s->respawn_timer);
        return;
    }
    if (pid == 0) {
        /* The worker gets the master's signal mask, blocked for its signalfd: empty it. */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (s->in_worker != NULL)
            s->in_worker(s->data);
        for (int i = 0; i < s->cfg->workers; i++) {
            if (i == slot)
                continue;
            close(s->listen_fds[i]);
            close(s->handoff_fds[2 * i]);
            close(s->handoff_fds[2 * i + 1]);
        }
        ev_loop_destroy(s->loop);
        _exit(tr_worker_run(s->cfg, slot, s->listen_fds[slot], &s->handoff_fds[2 * slot], s->shared));
    }
    s->slots[slot].pid = pid;
    s->slots[slot].started = ev_now(s->loop);
    s->slots[slot].respawn_at = 0;
}

static void on_respawn_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    tr_supervisor_t *s = t->data;
    (void)revents;
    double now = ev_now(loop), next = 0;
    for (int i = 0; i < s->cfg->workers; i++) {
        tr_slot_t *slot = &s->slots[i];
        if (slot->pid != 0 || slot->respawn_at == 0 || s->stopping)
            continue;
        if (slot->respawn_at <= now)
            spawn(s, i);
        else if (next == 0 || slot->respawn_at < next)
            next = slot->respawn_at;
    }
    if (next > 0) {
        ev_timer_set(&s->respawn_timer, next - now, 0.);
        ev_timer_start(loop, &s->respawn_timer);
    }
}

void tr_supervise_start(tr_supervisor_t *s, struct ev_loop *loop, const tr_config_t *cfg, tr_shared_t *shared,
                        const int *listen_fds, void (*in_worker)(void *data), void *data)
{
    memset(s, 0, sizeof(*s));
    s->loop = loop;
    s->cfg = cfg;
    s->shared = shared;
    s->listen_fds = listen_fds;
    s->in_worker = in_worker;
    s->data = data;
    s->slots = tr_mem_alloc(sizeof(tr_slot_t) * (size_t)cfg->workers);
    memset(s->slots, 0, sizeof(tr_slot_t) * (size_t)cfg->workers);
    s->handoff_fds = tr_mem_alloc(sizeof(int) * 2 * (size_t)cfg->workers);
    for (int i = 0; i < cfg->workers; i++) {
        if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, &s->handoff_fds[2 * i]) != 0) {
            tr_log_error("socketpair: %s; a worker that has to give up will close its idle connections",
                         strerror(errno));
            s->handoff_fds[2 * i] = s->handoff_fds[2 * i + 1] = -1;
        }
    }
    ev_timer_init(&s->respawn_timer, on_respawn_timer, 0., 0.);
    s->respawn_timer.data = s;
    for (int i = 0; i < cfg->workers; i++)
        spawn(s, i);
}

int tr_supervise_reap(tr_supervisor_t *s, pid_t pid, int status)
{
    for (int i = 0; i < s->cfg->workers; i++) {
        tr_slot_t *slot = &s->slots[i];
        if (slot->pid != pid)
            continue;
        slot->pid = 0;
        s->shared->workers[i].pid = 0;
        s->shared->workers[i].connections = 0;
        if (s->stopping)
            return 1;
        if (WIFEXITED(status) && WEXITSTATUS(status) == TR_GUARD_EXIT) {
            s->shared->worker_replacements++;
            tr_log_error("worker %d (pid %d) replaced: %s", i, (int)pid, s->shared->workers[i].stop_report);
        } else if (WIFSIGNALED(status))
            tr_log_error("worker %d (pid %d) killed by signal %d; replacing it", i, (int)pid, WTERMSIG(status));
        else
            tr_log_error("worker %d (pid %d) exited with status %d; replacing it", i, (int)pid, WEXITSTATUS(status));
        double now = ev_now(s->loop);
        slot->quick_exits = now - slot->started < CRASH_WINDOW ? slot->quick_exits + 1 : 0;
        /* A worker that crashes right after starting is retried with a growing delay (<= 1 s). */
        double delay = slot->quick_exits < 3 ? 0 : (slot->quick_exits < 6 ? 0.2 : 1.0);
        if (delay == 0) {
            spawn(s, i);
        } else {
            slot->respawn_at = now + delay;
            ev_timer_stop(s->loop, &s->respawn_timer);
            ev_timer_set(&s->respawn_timer, delay, 0.);
            ev_timer_start(s->loop, &s->respawn_timer);
        }
        return 1;
    }
    return 0;
}

void tr_supervise_signal(tr_supervisor_t *s, int sig)
{
    for (int i = 0; i < s->cfg->workers; i++)
        if (s->slots[i].pid != 0)
            kill(s->slots[i].pid, sig);
}

int tr_supervise_alive(const tr_supervisor_t *s)
{
    int n = 0;
    for (int i = 0; i < s->cfg->workers; i++)
        n += s->slots[i].pid != 0;
    return n;
}

void tr_supervise_stop(tr_supervisor_t *s)
{
    s->stopping = 1;
    ev_timer_stop(s->loop, &s->respawn_timer);
    tr_supervise_signal(s, SIGTERM);
}
