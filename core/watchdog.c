/*
 * The master's half of the watchdog (see watchdog.h).
 */
#include "watchdog.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "guard.h"
#include "log.h"

#define TICK 0.1
#define HOOK_GRACE 1.0 /* from setting the hook to giving up: interpreted code stops within microseconds */
#define EXIT_GRACE 2.0 /* from asking the worker to give up to killing it */

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* To the worker's main thread: the one that runs Lua (its store's writer thread must not get it). */
static void signal_worker(pid_t pid, int sig)
{
    syscall(SYS_tgkill, pid, pid, sig);
}

static void publish_cooldown(tr_watchdog_t *wd, const tr_strike_t *st)
{
    tr_shared_t *sh = wd->shared;
    for (int i = 0; i < TR_MAX_COOLDOWNS; i++) {
        tr_cooldown_t *c = &sh->cooldowns[i];
        if (c->generation == st->generation && strcmp(c->route, st->route) == 0) {
            c->until = tr_wall_clock() + COOLDOWN_SECONDS; /* struck again while paused: extended */
            return;
        }
    }
    for (int i = 0; i < TR_MAX_COOLDOWNS; i++) {
        tr_cooldown_t *c = &sh->cooldowns[i];
        if (c->generation != 0)
            continue;
        snprintf(c->route, sizeof(c->route), "%s", st->route);
        c->until = tr_wall_clock() + COOLDOWN_SECONDS;
        __sync_synchronize(); /* the route is complete before a worker can match the entry */
        c->generation = st->generation;
        sh->ncooldowns++;
        tr_log_error("route %s (generation %llu) paused for %.0f s: its handler was stopped %d times within %.0f s; "
                     "it answers 503 until then or until a reload",
                     st->route, (unsigned long long)st->generation, COOLDOWN_SECONDS, COOLDOWN_STRIKES,
                     COOLDOWN_WINDOW);
        return;
    }
    tr_log_error("route %s: cannot be paused, %d routes are paused already", st->route, TR_MAX_COOLDOWNS);
}

static void strike(tr_watchdog_t *wd, const char *route, uint64_t generation, double now)
{
    if (generation == 0)
        return; /* the application loading, not a route */
    tr_strike_t *st = NULL, *free_one = NULL, *oldest = &wd->strikes[0];
    for (size_t i = 0; i < sizeof(wd->strikes) / sizeof(wd->strikes[0]); i++) {
        tr_strike_t *s = &wd->strikes[i];
        if (s->generation == generation && strcmp(s->route, route) == 0) {
            st = s;
            break;
        }
        if (s->generation == 0 && free_one == NULL)
            free_one = s;
        if (s->at[0] < oldest->at[0])
            oldest = s;
    }
    if (st == NULL) {
        st = free_one != NULL ? free_one : oldest;
        memset(st, 0, sizeof(*st));
        st->generation = generation;
        snprintf(st->route, sizeof(st->route), "%s", route);
    }
    memmove(&st->at[1], &st->at[0], sizeof(st->at[0]) * (COOLDOWN_STRIKES - 1));
    st->at[0] = now;
    double first = st->at[COOLDOWN_STRIKES - 1];
    if (first > 0 && now - first <= COOLDOWN_WINDOW)
        publish_cooldown(wd, st);
}

static void lift_expired(tr_watchdog_t *wd)
{
    tr_shared_t *sh = wd->shared;
    if (sh->ncooldowns == 0)
        return;
    double now = tr_wall_clock();
    for (int i = 0; i < TR_MAX_COOLDOWNS; i++) {
        tr_cooldown_t *c = &sh->cooldowns[i];
        int stale = c->generation != 0 && c->generation < sh->generation; /* a reload serves the route anew */
        if (c->generation != 0 && (c->until <= now || stale)) {
            tr_log_info("route %s (generation %llu) served again", c->route, (unsigned long long)c->generation);
            c->generation = 0;
            sh->ncooldowns--;
        }
    }
}

static void watch_slot(tr_watchdog_t *wd, int i, double now)
{
    tr_watch_slot_t *w = &wd->slots[i];
    tr_stats_t *st = &wd->shared->workers[i];
    pid_t pid = wd->workers->slots[i].pid;
    if (st->handler_timeouts != w->timeouts_seen) {
        w->timeouts_seen = st->handler_timeouts;
        strike(wd, st->stopped_route, st->stopped_generation, now);
    }
    uint64_t run = pid != 0 ? st->lua_running : 0;
    if (pid != w->pid || run == 0 || run != w->run) {
        w->pid = pid;
        w->run = run;
        w->since = now;
        w->stage = 0;
        return;
    }
    double ran = now - w->since;
    /* Loading a generation that the preflight loaded within its budget gets that budget here too. */
    double budget = st->lua_loading ? tr_config_load_budget(wd->budget) : wd->budget;
    if (w->stage == 0 && ran >= budget) {
        signal_worker(pid, tr_guard_signal());
        w->stage = 1;
        w->stage_at = now;
    } else if (w->stage == 1 && now - w->stage_at >= HOOK_GRACE) {
        signal_worker(pid, tr_guard_signal());
        w->stage = 2;
        w->stage_at = now;
    } else if (w->stage == 2 && now - w->stage_at >= EXIT_GRACE) {
        tr_log_error("worker %d (pid %d): still in a handler %.1f s after being asked to stop; killing it", i, (int)pid,
                     now - w->since);
        kill(pid, SIGKILL);
        st->handler_timeouts++;
        wd->shared->worker_replacements++;
        w->stage = 3;
    }
}

static void on_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    tr_watchdog_t *wd = t->data;
    (void)loop, (void)revents;
    double now = mono_now();
    for (int i = 0; i < wd->nworkers; i++)
        watch_slot(wd, i, now);
    lift_expired(wd);
}

void tr_watchdog_start(tr_watchdog_t *wd, struct ev_loop *loop, tr_shared_t *shared, tr_supervisor_t *workers,
                       double budget)
{
    memset(wd, 0, sizeof(*wd));
    wd->loop = loop;
    wd->shared = shared;
    wd->workers = workers;
    wd->nworkers = workers->cfg->workers;
    wd->budget = budget;
    for (int i = 0; i < wd->nworkers; i++)
        wd->slots[i].timeouts_seen = shared->workers[i].handler_timeouts;
    ev_timer_init(&wd->tick, on_tick, TICK, TICK);
    wd->tick.data = wd;
    ev_timer_start(loop, &wd->tick);
}

void tr_watchdog_stop(tr_watchdog_t *wd)
{
    ev_timer_stop(wd->loop, &wd->tick);
}

int tr_watchdog_behind(const tr_watchdog_t *wd, uint64_t generation, char *out, size_t size)
{
    size_t len = 0;
    int n = 0;
    double now = mono_now();
    out[0] = '\0';
    for (int i = 0; i < wd->nworkers; i++) {
        const tr_stats_t *st = &wd->shared->workers[i];
        const tr_watch_slot_t *w = &wd->slots[i];
        pid_t pid = wd->workers->slots[i].pid;
        if (pid != 0 && st->pid == pid && st->generation == generation)
            continue;
        char why[TR_ERROR_MAX + 64];
        if (pid == 0)
            snprintf(why, sizeof(why), "being replaced");
        else if (st->pid != pid)
            snprintf(why, sizeof(why), "starting");
        else if (w->run != 0 && w->pid == pid && st->lua_running == w->run)
            snprintf(why, sizeof(why), "busy in a handler for %.1f s (--handler-timeout %g s)", now - w->since,
                     wd->budget);
        else if (st->last_error[0] != '\0')
            snprintf(why, sizeof(why), "failed to load it: %.*s", TR_ERROR_MAX - 64, st->last_error);
        else
            snprintf(why, sizeof(why), "loading it");
        /* JSON-escape why (it may hold a Lua error message). */
        char esc[2 * sizeof(why)];
        size_t e = 0;
        for (const char *p = why; *p && e + 7 < sizeof(esc); p++) {
            unsigned char ch = (unsigned char)*p;
            if (ch == '"' || ch == '\\') {
                esc[e++] = '\\';
                esc[e++] = (char)ch;
            } else if (ch < 0x20) {
                e += (size_t)snprintf(esc + e, sizeof(esc) - e, "\\u%04x", ch);
            } else {
                esc[e++] = (char)ch;
            }
        }
        esc[e] = '\0';
        int k = snprintf(out + len, size - len, "%s{\"worker\":%d,\"pid\":%d,\"generation\":%llu,\"why\":\"%s\"}",
                         n ? "," : "", i, (int)pid, (unsigned long long)st->generation, esc);
        if (k < 0 || (size_t)k >= size - len) {
            out[len] = '\0';
            break;
        }
        len += (size_t)k;
        n++;
    }
    return n;
}
