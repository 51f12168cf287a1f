#include "status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

void tr_status_json_string(tr_bufpool_t *bp, tr_buf_t *out, const char *s)
{
    if (s == NULL || *s == '\0') {
        tr_buf_append(bp, out, "null", 4);
        return;
    }
    tr_buf_append(bp, out, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            char esc[2] = {'\\', (char)*p};
            tr_buf_append(bp, out, esc, 2);
        } else if (*p == '\n') {
            tr_buf_append(bp, out, "\\n", 2);
        } else if (*p < 0x20) {
            tr_buf_appendf(bp, out, "\\u%04x", *p);
        } else {
            tr_buf_append(bp, out, p, 1);
        }
    }
    tr_buf_append(bp, out, "\"", 1);
}

void tr_status_json(tr_bufpool_t *bp, tr_buf_t *out, const tr_shared_t *shared, int nworkers, double started_at)
{
    tr_buf_appendf(bp, out, "{\"master_pid\":%d,\"uptime\":%.3f,\"generation\":%llu,\"generation_loaded_at\":%.3f,",
                   (int)getpid(), tr_wall_clock() - started_at, (unsigned long long)shared->generation,
                   shared->generation_loaded_at);
    tr_buf_appendf(bp, out, "\"reload\":{\"reloads\":%llu,\"failures\":%llu,\"last_at\":%.3f,\"last_error\":",
                   (unsigned long long)shared->reloads, (unsigned long long)shared->reload_failures,
                   shared->last_reload_at);
    tr_status_json_string(bp, out, shared->last_reload_error);
    tr_buf_appendf(bp, out, "},\"worker_replacements\":%llu,\"paused_routes\":[",
                   (unsigned long long)shared->worker_replacements);
    double now = tr_wall_clock();
    for (int i = 0, n = 0; i < TR_MAX_COOLDOWNS && shared->ncooldowns != 0; i++) {
        const tr_cooldown_t *c = &shared->cooldowns[i];
        if (c->generation == 0)
            continue;
        tr_buf_appendf(bp, out, "%s{\"generation\":%llu,\"seconds_left\":%.1f,\"route\":", n++ ? "," : "",
                       (unsigned long long)c->generation, c->until > now ? c->until - now : 0.0);
        tr_status_json_string(bp, out, c->route);
        tr_buf_append(bp, out, "}", 1);
    }
    tr_buf_append(bp, out, "]", 1);
    /* Already JSON (made by the scripts' sandbox at the preflight). */
    tr_buf_append(bp, out, ",\"script_environment\":", 22);
    if (shared->script_environment[0] == '{')
        tr_buf_append(bp, out, shared->script_environment, strlen(shared->script_environment));
    else
        tr_buf_append(bp, out, "null", 4);
    tr_buf_append(bp, out, ",\"workers\":[", 12);
    for (int i = 0; i < nworkers; i++) {
        const tr_stats_t *s = &shared->workers[i];
        tr_buf_appendf(
            bp, out,
            "%s{\"slot\":%d,\"pid\":%d,\"requests\":%llu,\"connections\":%llu,\"connections_refused\":%llu,"
            "\"connections_shed\":%llu,\"timeouts\":%llu,"
            "\"pools\":{\"connections\":{\"total\":%llu,\"free\":%llu},\"requests\":{\"total\":%llu,\"free\":%llu},"
            "\"buffers\":{\"total\":%llu,\"free\":%llu}},",
            i ? "," : "", i, (int)s->pid, (unsigned long long)s->requests, (unsigned long long)s->connections,
            (unsigned long long)s->connections_refused, (unsigned long long)s->connections_shed,
            (unsigned long long)s->timeouts, (unsigned long long)s->pool_conn_total,
            (unsigned long long)s->pool_conn_free, (unsigned long long)s->pool_req_total,
            (unsigned long long)s->pool_req_free, (unsigned long long)s->pool_buf_total,
            (unsigned long long)s->pool_buf_free);
        tr_buf_appendf(
            bp, out,
            "\"core_allocations\":%llu,\"lua_memory\":%llu,\"generation\":%llu,\"generation_loaded_at\":%.3f,"
            "\"old_generations\":%llu,\"store_commits\":%llu,\"store_writes\":%llu,",
            (unsigned long long)s->core_allocations, (unsigned long long)s->lua_memory,
            (unsigned long long)s->generation, s->generation_loaded_at, (unsigned long long)s->old_generations,
            (unsigned long long)s->store_commits, (unsigned long long)s->store_writes);
        tr_buf_appendf(bp, out, "\"handler_timeouts\":%llu,\"paused_route_refusals\":%llu,",
                       (unsigned long long)s->handler_timeouts, (unsigned long long)s->cooldown_refusals);
        tr_buf_appendf(bp, out, "\"lua_memory_limit\":%llu,\"lua_memory_errors\":%llu,\"last_error\":",
                       (unsigned long long)s->lua_memory_limit, (unsigned long long)s->lua_memory_errors);
        /* A worker reports its own load failure, or else the last rejected reload (which it never saw). */
        tr_status_json_string(bp, out, s->last_error[0] ? s->last_error : shared->last_reload_error);
        tr_buf_append(bp, out, "}", 1);
    }
    tr_buf_append(bp, out, "]}", 2);
}
