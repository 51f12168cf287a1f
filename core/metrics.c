#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

const double tr_metrics_bounds[TR_METRICS_BUCKETS - 1] = {.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10};

tr_metrics_t *tr_metrics_new(int nworkers)
{
    size_t size = sizeof(tr_metrics_t) + sizeof(tr_worker_metrics_t) * (size_t)nworkers;
    tr_metrics_t *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    m->nworkers = nworkers; /* the rest is zero: a fresh anonymous mapping */
    return m;
}

unsigned tr_metrics_route_slot(tr_worker_metrics_t *wm, const char *label)
{
    uint32_t n = wm->nlabels;
    for (uint32_t i = 0; i < n; i++)
        if (strncmp(wm->labels[i], label, TR_METRICS_LABEL_MAX - 1) == 0)
            return TR_METRICS_FIRST_ROUTE + i;
    if (n == TR_METRICS_ROUTES)
        return TR_METRICS_OTHER;
    snprintf(wm->labels[n], TR_METRICS_LABEL_MAX, "%s", label);
    /* The string is complete before the master can see the new count. */
    __atomic_store_n(&wm->nlabels, n + 1, __ATOMIC_RELEASE);
    return TR_METRICS_FIRST_ROUTE + n;
}

void tr_metrics_count(tr_worker_metrics_t *wm, unsigned slot, int status, double seconds)
{
    tr_route_metrics_t *rm = &wm->routes[slot];
    unsigned i = 0;
    /* A route answers few distinct statuses: a short scan finds its entry, or the first free one. */
    while (i < TR_METRICS_STATUSES - 1 && rm->status[i] != status && rm->status[i] != 0)
        i++;
    if (i < TR_METRICS_STATUSES - 1 && rm->status[i] == 0)
        rm->status[i] = (uint16_t)status;
    rm->count[i]++;
    unsigned b = 0;
    while (b < TR_METRICS_BUCKETS - 1 && seconds > tr_metrics_bounds[b])
        b++;
    rm->buckets[b]++;
    rm->seconds += seconds;
}

int tr_metrics_workers_up(const tr_shared_t *shared, int nworkers)
{
    int up = 0;
    for (int i = 0; i < nworkers; i++)
        up += shared->workers[i].pid != 0;
    return up;
}

int tr_metrics_health(const tr_shared_t *shared, int nworkers, const char **body, size_t *len)
{
    static const char ok[] = "{\"status\":\"ok\"}", down[] = "{\"status\":\"unavailable\"}",
                      store[] = "{\"status\":\"unavailable\",\"store\":\"unreachable\"}";
    int store_down = 0;
    for (int i = 0; i < nworkers; i++)
        store_down |= shared->workers[i].pid != 0 && shared->workers[i].store_down;
    if (tr_metrics_workers_up(shared, nworkers) != nworkers) {
        *body = down, *len = sizeof(down) - 1;
        return 503;
    }
    if (store_down) {
        *body = store, *len = sizeof(store) - 1;
        return 503;
    }
    *body = ok, *len = sizeof(ok) - 1;
    return 200;
}

/* ---- rendering (in the master, at scrape time) ---- */

static void header(tr_bufpool_t *bp, tr_buf_t *out, const char *name, const char *type, const char *help)
{
    tr_buf_appendf(bp, out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value: backslash, double quote and newline escaped, as the text format wants. */
static void label_value(tr_bufpool_t *bp, tr_buf_t *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            tr_buf_append(bp, out, (const char[]){'\\', *s}, 2);
        else if (*s == '\n')
            tr_buf_append(bp, out, "\\n", 2);
        else
            tr_buf_append(bp, out, s, 1);
    }
}

static void route_label(tr_bufpool_t *bp, tr_buf_t *out, const char *name, const char *route)
{
    tr_buf_appendf(bp, out, "%s{route=\"", name);
    label_value(bp, out, route);
    tr_buf_append(bp, out, "\"", 1);
}

/* The route totals of one label, summed over the workers. */
typedef struct route_sum_s {
    const char *label;
    uint16_t status[TR_METRICS_STATUSES * 4];
    uint64_t count[TR_METRICS_STATUSES * 4];
    unsigned nstatus;
    uint64_t other; /* statuses past what a worker or this sum could tell apart */
    uint64_t buckets[TR_METRICS_BUCKETS];
    double seconds;
} route_sum_t;

static void add_route(route_sum_t *sum, const tr_route_metrics_t *rm)
{
    for (unsigned i = 0; i < TR_METRICS_STATUSES; i++) {
        uint64_t count = rm->count[i];
        uint16_t status = i < TR_METRICS_STATUSES - 1 ? rm->status[i] : 0;
        if (count == 0)
            continue;
        if (status == 0) {
            sum->other += count;
            continue;
        }
        unsigned j = 0;
        while (j < sum->nstatus && sum->status[j] != status)
            j++;
        if (j == sum->nstatus) {
            if (j == sizeof(sum->status) / sizeof(sum->status[0])) {
                sum->other += count;
                continue;
            }
            sum->status[sum->nstatus++] = status;
        }
        sum->count[j] += count;
    }
    for (unsigned b = 0; b < TR_METRICS_BUCKETS; b++)
        sum->buckets[b] += rm->buckets[b];
    sum->seconds += rm->seconds;
}

/* The totals by label: the fixed slots first, then every label any worker interned. Returns how many
 * entries of sums (room for cap) were filled. */
static unsigned sum_routes(const tr_metrics_t *m, int nworkers, route_sum_t *sums, unsigned cap)
{
    unsigned n = 2;
    memset(sums, 0, sizeof(*sums) * cap);
    sums[0].label = "unmatched";
    sums[1].label = "other";
    for (int w = 0; w < nworkers && w < m->nworkers; w++) {
        const tr_worker_metrics_t *wm = &m->workers[w];
        add_route(&sums[0], &wm->routes[TR_METRICS_UNMATCHED]);
        add_route(&sums[1], &wm->routes[TR_METRICS_OTHER]);
        uint32_t nlabels = __atomic_load_n(&wm->nlabels, __ATOMIC_ACQUIRE);
        for (uint32_t i = 0; i < nlabels; i++) {
            unsigned j = 2;
            while (j < n && strcmp(sums[j].label, wm->labels[i]) != 0)
                j++;
            if (j == n) {
                if (n == cap) {
                    add_route(&sums[1], &wm->routes[TR_METRICS_FIRST_ROUTE + i]);
                    continue;
                }
                sums[n++].label = wm->labels[i];
            }
            add_route(&sums[j], &wm->routes[TR_METRICS_FIRST_ROUTE + i]);
        }
    }
    return n;
}

static void render_routes(tr_bufpool_t *bp, tr_buf_t *out, const tr_metrics_t *m, int nworkers)
{
    unsigned cap = 2 + TR_METRICS_ROUTES * 2;
    route_sum_t *sums = tr_mem_alloc(sizeof(*sums) * cap);
    unsigned n = sum_routes(m, nworkers, sums, cap);

    header(bp, out, "triage_http_requests_total", "counter",
           "Requests answered, by route (\"METHOD pattern\", or unmatched) and status.");
    for (unsigned j = 0; j < n; j++) {
        route_sum_t *s = &sums[j];
        for (unsigned i = 0; i < s->nstatus; i++) {
            route_label(bp, out, "triage_http_requests_total", s->label);
            tr_buf_appendf(bp, out, ",status=\"%u\"} %llu\n", (unsigned)s->status[i], (unsigned long long)s->count[i]);
        }
        if (s->other > 0) {
            route_label(bp, out, "triage_http_requests_total", s->label);
            tr_buf_appendf(bp, out, ",status=\"other\"} %llu\n", (unsigned long long)s->other);
        }
    }

    header(bp, out, "triage_http_request_duration_seconds", "histogram",
           "Time from a request's first byte to its response, by route.");
    for (unsigned j = 0; j < n; j++) {
        route_sum_t *s = &sums[j];
        uint64_t total = 0;
        for (unsigned b = 0; b < TR_METRICS_BUCKETS; b++)
            total += s->buckets[b];
        if (total == 0)
            continue;
        uint64_t cumulative = 0;
        for (unsigned b = 0; b < TR_METRICS_BUCKETS; b++) {
            cumulative += s->buckets[b];
            route_label(bp, out, "triage_http_request_duration_seconds_bucket", s->label);
            if (b < TR_METRICS_BUCKETS - 1)
                tr_buf_appendf(bp, out, ",le=\"%g\"} %llu\n", tr_metrics_bounds[b], (unsigned long long)cumulative);
            else
                tr_buf_appendf(bp, out, ",le=\"+Inf\"} %llu\n", (unsigned long long)cumulative);
        }
        route_label(bp, out, "triage_http_request_duration_seconds_sum", s->label);
        tr_buf_appendf(bp, out, "} %.6f\n", s->seconds);
        route_label(bp, out, "triage_http_request_duration_seconds_count", s->label);
        tr_buf_appendf(bp, out, "} %llu\n", (unsigned long long)cumulative);
    }
    tr_mem_free(sums);
}

/* One sample per worker slot of a field of tr_stats_t. */
#define PER_WORKER(name, type, help, field)                                                                            \
    do {                                                                                                               \
        header(bp, out, name, type, help);                                                                             \
        for (int i = 0; i < nworkers; i++)                                                                             \
            tr_buf_appendf(bp, out, name "{worker=\"%d\"} %llu\n", i, (unsigned long long)shared->workers[i].field);   \
    } while (0)

void tr_metrics_render(tr_bufpool_t *bp, tr_buf_t *out, const tr_metrics_t *m, const tr_shared_t *shared, int nworkers)
{
    if (m != NULL)
        render_routes(bp, out, m, nworkers);

    header(bp, out, "triage_workers", "gauge", "Worker slots configured (--workers).");
    tr_buf_appendf(bp, out, "triage_workers %d\n", nworkers);
    header(bp, out, "triage_workers_up", "gauge", "Workers running.");
    tr_buf_appendf(bp, out, "triage_workers_up %d\n", tr_metrics_workers_up(shared, nworkers));
    header(bp, out, "triage_worker_replacements_total", "counter",
           "Workers replaced because a handler ran past --handler-timeout in code that could not be stopped.");
    tr_buf_appendf(bp, out, "triage_worker_replacements_total %llu\n", (unsigned long long)shared->worker_replacements);
    header(bp, out, "triage_generation", "gauge", "The generation of the code the master has published.");
    tr_buf_appendf(bp, out, "triage_generation %llu\n", (unsigned long long)shared->generation);
    header(bp, out, "triage_reloads_total", "counter", "Reloads that went live.");
    tr_buf_appendf(bp, out, "triage_reloads_total %llu\n", (unsigned long long)shared->reloads);
    header(bp, out, "triage_reload_errors_total", "counter", "Reloads rejected (preflight or --reload-check).");
    tr_buf_appendf(bp, out, "triage_reload_errors_total %llu\n", (unsigned long long)shared->reload_failures);

    PER_WORKER("triage_open_connections", "gauge", "Open client connections.", connections);
    PER_WORKER("triage_lua_memory_bytes", "gauge", "Memory of the worker's Lua states.", lua_memory);
    PER_WORKER("triage_connections_shed_total", "counter",
               "Idle keep-alive connections closed to make room for new ones.", connections_shed);

    header(bp, out, "triage_refusals_total", "counter", "Connections refused (503), by reason.");
    for (int i = 0; i < nworkers; i++)
        tr_buf_appendf(bp, out, "triage_refusals_total{worker=\"%d\",reason=\"connection_cap\"} %llu\n", i,
                       (unsigned long long)shared->workers[i].connections_refused);
    header(bp, out, "triage_timeouts_total", "counter",
           "Deadlines that ended a connection or a request, by reason (connection: the header, body and "
           "write deadlines; handler: --handler-timeout).");
    for (int i = 0; i < nworkers; i++) {
        const tr_stats_t *s = &shared->workers[i];
        tr_buf_appendf(bp, out, "triage_timeouts_total{worker=\"%d\",reason=\"connection\"} %llu\n", i,
                       (unsigned long long)s->timeouts);
        tr_buf_appendf(bp, out, "triage_timeouts_total{worker=\"%d\",reason=\"handler\"} %llu\n", i,
                       (unsigned long long)s->handler_timeouts);
    }

    PER_WORKER("triage_paused_route_refusals_total", "counter",
               "Requests answered 503 without running because their route was paused (--handler-timeout).",
               cooldown_refusals);
    header(bp, out, "triage_paused_routes", "gauge", "Routes paused after repeated handler timeouts.");
    tr_buf_appendf(bp, out, "triage_paused_routes %u\n", (unsigned)shared->ncooldowns);
    PER_WORKER("triage_lua_memory_limit_errors_total", "counter", "Requests that failed on --lua-memory-limit.",
               lua_memory_errors);
    PER_WORKER("triage_store_commits_total", "counter", "Group commits of the store (one transaction each).",
               store_commits);
    PER_WORKER("triage_store_writes_total", "counter", "Write jobs (db:exec, db:tx) committed by them.", store_writes);
    PER_WORKER("triage_store_down", "gauge", "1 while the worker cannot reach its store (PostgreSQL), else 0.",
               store_down);

    header(bp, out, "triage_pool_objects", "gauge", "Pooled objects of each worker, by pool and state.");
    for (int i = 0; i < nworkers; i++) {
        const tr_stats_t *s = &shared->workers[i];
        static const char *pools[] = {"connections", "requests", "buffers"};
        uint64_t total[] = {s->pool_conn_total, s->pool_req_total, s->pool_buf_total};
        uint64_t free_[] = {s->pool_conn_free, s->pool_req_free, s->pool_buf_free};
        for (int p = 0; p < 3; p++) {
            tr_buf_appendf(bp, out, "triage_pool_objects{worker=\"%d\",pool=\"%s\",state=\"in_use\"} %llu\n", i,
                           pools[p], (unsigned long long)(total[p] >= free_[p] ? total[p] - free_[p] : 0));
            tr_buf_appendf(bp, out, "triage_pool_objects{worker=\"%d\",pool=\"%s\",state=\"free\"} %llu\n", i, pools[p],
                           (unsigned long long)free_[p]);
        }
    }
}
