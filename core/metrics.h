/*
 * Per-route request counters and latency histograms, for GET /_triage/metrics.
 *
 * The counters live in one shared mapping made by the master before the first fork
 * (tr_metrics_new), one tr_worker_metrics_t per worker slot. A worker writes only its own slot, with
 * plain stores (no lock, no syscall); the master sums the slots at scrape time (tr_metrics_render).
 * A reader may see a value a moment old, never a torn one (aligned 64-bit words).
 *
 * Routes are known by their label ("GET /api/v1/protocols/:id", tr_router_label), not by handler
 * number: numbers change with a reload, labels do not, so a route's counts go on across reloads.
 * A worker interns each label it meets into one of its TR_METRICS_ROUTES slots and publishes the
 * string beside the counters; past that many labels, routes share the "other" slot. Requests that
 * match no route (404, 405) and errors the core answers before any route (400, 408, 413, ...) are
 * counted under the fixed label "unmatched". The counts of a slot survive the worker's replacement:
 * counters only grow.
 */
#ifndef TR_METRICS_H
#define TR_METRICS_H

#include <stdint.h>

#include "pool.h"
#include "shared.h"

#define TR_METRICS_ROUTES 64     /* route labels interned per worker */
#define TR_METRICS_UNMATCHED 0   /* slot: no route (404, 405) or a core error before routing */
#define TR_METRICS_OTHER 1       /* slot: routes past the first TR_METRICS_ROUTES labels */
#define TR_METRICS_FIRST_ROUTE 2 /* slot of the first interned label */
#define TR_METRICS_SLOTS (TR_METRICS_FIRST_ROUTE + TR_METRICS_ROUTES)
#define TR_METRICS_STATUSES 12 /* distinct statuses counted per slot; the last entry takes the rest */
#define TR_METRICS_BUCKETS 12  /* latency buckets: the bounds of tr_metrics_bounds, then +Inf */
#define TR_METRICS_LABEL_MAX 160

/* The upper bounds (seconds) of the latency buckets but the last (+Inf). */
extern const double tr_metrics_bounds[TR_METRICS_BUCKETS - 1];

typedef struct tr_route_metrics_s {
    volatile uint16_t status[TR_METRICS_STATUSES]; /* 0: entry unused; the last entry: "other" */
    volatile uint64_t count[TR_METRICS_STATUSES];
    volatile uint64_t buckets[TR_METRICS_BUCKETS]; /* per bucket, not cumulative */
    volatile double seconds;                       /* sum of the latencies */
} tr_route_metrics_t;

typedef struct tr_worker_metrics_s {
    volatile uint32_t nlabels; /* labels published: slots TR_METRICS_FIRST_ROUTE + [0, nlabels) */
    char labels[TR_METRICS_ROUTES][TR_METRICS_LABEL_MAX];
    tr_route_metrics_t routes[TR_METRICS_SLOTS];
} tr_worker_metrics_t;

typedef struct tr_metrics_s {
    int nworkers;
    tr_worker_metrics_t workers[];
} tr_metrics_t;

/* Map the counters of nworkers worker slots (MAP_SHARED, zeroed): call before the first fork. Lives
 * as long as the process and its children. Returns NULL with errno set if the mapping fails. */
tr_metrics_t *tr_metrics_new(int nworkers);

/* The slot of a route label in wm, interned on first sight (TR_METRICS_OTHER once the table is full;
 * a label longer than TR_METRICS_LABEL_MAX - 1 is cut). Only the worker owning wm calls this. */
unsigned tr_metrics_route_slot(tr_worker_metrics_t *wm, const char *label);

/* Count one finished request of slot with its status and latency. No lock, no syscall. */
void tr_metrics_count(tr_worker_metrics_t *wm, unsigned slot, int status, double seconds);

/* Append the Prometheus text exposition (format 0.0.4) of everything: the route counters summed by
 * label over the workers, and the figures of shared (connections, pools, reloads, timeouts, ...). */
void tr_metrics_render(tr_bufpool_t *bp, tr_buf_t *out, const tr_metrics_t *m, const tr_shared_t *shared, int nworkers);

/* Workers running: slots whose worker has published its pid. */
int tr_metrics_workers_up(const tr_shared_t *shared, int nworkers);

/* The answer of GET /_triage/health: 200 and {"status":"ok"} when every worker runs and reaches the
 * store; else 503 and a body naming what is down (workers starting, or PostgreSQL unreachable). The
 * body is static. Returns the status. */
int tr_metrics_health(const tr_shared_t *shared, int nworkers, const char **body, size_t *len);

#endif
