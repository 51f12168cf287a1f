/*
 * The worker's half of the watchdog (see guard.h).
 */
#include "guard.h"

#include <lauxlib.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ffi_api.h"
#include "log.h"
#include "lua_vm.h"

#define HOOK_INSTRUCTIONS 1000 /* how often the hook looks, in VM instructions */

static tr_stats_t *guard_stats;
static tr_conn_server_t *guard_conns;
static int guard_handoff = -1;
static double guard_budget;
static volatile uint64_t hooked_run;  /* the run the hook was set for (0: none) */
static volatile uint64_t counted_run; /* the run last counted as a stop */

int tr_guard_signal(void)
{
    return SIGRTMIN + 2;
}

/* The route of r ("GET /api/v1/x/:id"), or what ran if no request did. */
static const char *route_of(const tr_req_t *r)
{
    const char *label = NULL;
    if (r != NULL && r->gen != NULL)
        label = tr_router_label(r->gen->router, r->pub.handler);
    return label != NULL ? label : (r != NULL ? "(no route)" : "(loading the application)");
}

/* Note the stopped request's route and generation in the stats slot (the master counts them). */
static void note_stopped(const tr_req_t *r)
{
    uint64_t run = guard_stats->lua_running;
    if (run != 0 && run == counted_run)
        return; /* the hook stopped it already, and the handler went on (it caught the error) */
    counted_run = run;
    const char *route = route_of(r);
    size_t n = strlen(route);
    if (n >= sizeof(guard_stats->stopped_route))
        n = sizeof(guard_stats->stopped_route) - 1;
    memcpy(guard_stats->stopped_route, route, n);
    guard_stats->stopped_route[n] = '\0';
    guard_stats->stopped_generation = r != NULL && r->gen != NULL ? r->gen->id : 0;
    guard_stats->handler_timeouts++;
}

/* Step 1: the count hook, reached by interpreted code. Runs in the VM (not in the signal handler). */
static void on_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    if (guard_stats->lua_running != hooked_run)
        return; /* set for a run that has ended since */
    const tr_req_t *r = tr_ffi_env.running;
    if (r != NULL) {
        tr_ffi_env.stopped = r;
        tr_ffi_env.stopped_seq = r->seq;
    }
    note_stopped(r);
    tr_log_error("worker %d: %s ran past --handler-timeout (%g s): stopped", tr_ffi_env.slot, route_of(r),
                 guard_budget);
    luaL_error(L, "stopped: ran past --handler-timeout (%g s)", guard_budget);
}

/* Step 2's answer to every waiting client (see tr_conn_abandon). Only formatting into buf. */
static size_t answer(const tr_req_t *r, char *buf, size_t size, void *data)
{
    const tr_req_t *stuck = data;
    char id[TR_REQUEST_ID_MAX];
    size_t idlen = r != NULL ? tr_http_request_id(r, id) : 0;
    char body[512];
    int blen;
    if (r != NULL && r == stuck)
        blen = snprintf(body, sizeof(body),
                        "{\"error\":\"the handler ran past --handler-timeout (%g s) and was stopped\","
                        "\"requestId\":\"%.*s\"}",
                        guard_budget, (int)idlen, id);
    else
        blen =
            snprintf(body, sizeof(body), "{\"error\":\"the worker serving this request was restarted; retry\"%s%.*s%s}",
                     idlen ? ",\"requestId\":\"" : "", (int)idlen, id, idlen ? "\"" : "");
    int n = snprintf(buf, size,
                     "HTTP/1.1 503 Service Unavailable\r\nServer: triage\r\n%.*sContent-Type: application/json\r\n"
                     "Retry-After: 1\r\nConnection: close\r\n%s%.*s%sContent-Length: %d\r\n\r\n%s",
                     (int)guard_conns->env.date_len, guard_conns->env.date_line, idlen ? "X-Request-Id: " : "",
                     (int)idlen, id, idlen ? "\r\n" : "", blen, body);
    return n < 0 ? 0 : ((size_t)n < size ? (size_t)n : size - 1);
}

/* Step 2, in the signal handler: answer, close, leave a report, exit. */
static void give_up(void)
{
    const tr_req_t *stuck = tr_ffi_env.running;
    tr_conn_abandoned_t done;
    tr_conn_abandon(guard_conns, answer, (void *)stuck, guard_handoff, &done);
    note_stopped(stuck);
    char id[TR_REQUEST_ID_MAX];
    size_t idlen = stuck != NULL ? tr_http_request_id(stuck, id) : 0;
    snprintf(guard_stats->stop_report, sizeof(guard_stats->stop_report),
             "%s%.*s%s on %s ran past --handler-timeout (%g s) in code that could not be interrupted; "
             "clients answered 503: %u, idle connections handed to the next worker: %u, closed without an answer: %u",
             idlen ? "request " : "", (int)idlen, id, idlen ? "" : "the code", route_of(stuck), guard_budget,
             done.answered, done.handed_off, done.closed - done.handed_off - done.answered);
    _exit(TR_GUARD_EXIT);
}

static void on_signal(int sig, siginfo_t *info, void *uc)
{
    (void)sig, (void)info, (void)uc;
    uint64_t run = guard_stats->lua_running;
    lua_State *L = tr_vm_active_L;
    if (run == 0 || L == NULL)
        return; /* the run ended meanwhile */
    if (hooked_run != run) {
        hooked_run = run;
        lua_sethook(L, on_hook, LUA_MASKCOUNT, HOOK_INSTRUCTIONS);
        return;
    }
    give_up();
}

void tr_guard_init(tr_stats_t *stats, tr_conn_server_t *conns, int handoff_fd, double budget)
{
    guard_stats = stats;
    guard_conns = conns;
    guard_handoff = handoff_fd;
    guard_budget = budget;
    tr_vm_lua_running = &stats->lua_running;
    tr_vm_lua_loading = &stats->lua_loading;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(tr_guard_signal(), &sa, NULL);
}
