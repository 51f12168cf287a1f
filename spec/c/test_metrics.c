/* core/metrics.c: route label interning, counting, the Prometheus rendering; core/log.c's JSON
 * escaping for the access log. */
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "log.h"
#include "metrics.h"
#include "test.h"

static tr_metrics_t *new_metrics(int nworkers)
{
    tr_metrics_t *m = tr_metrics_new(nworkers);
    ASSERT_NOT_NULL(m);
    return m;
}

static void free_metrics(tr_metrics_t *m)
{
    munmap(m, sizeof(*m) + sizeof(tr_worker_metrics_t) * (size_t)m->nworkers);
}

TEST_IMPL(metrics_route_slots)
{
    tr_metrics_t *m = new_metrics(1);
    tr_worker_metrics_t *wm = &m->workers[0];
    unsigned a = tr_metrics_route_slot(wm, "GET /a/:id");
    unsigned b = tr_metrics_route_slot(wm, "POST /a");
    ASSERT_INT_EQ(a, TR_METRICS_FIRST_ROUTE);
    ASSERT_INT_EQ(b, TR_METRICS_FIRST_ROUTE + 1);
    ASSERT_INT_EQ(tr_metrics_route_slot(wm, "GET /a/:id"), a); /* the same label: the same slot */
    char label[32];
    for (int i = 2; i < TR_METRICS_ROUTES; i++) {
        snprintf(label, sizeof(label), "GET /r%d", i);
        ASSERT_INT_EQ(tr_metrics_route_slot(wm, label), TR_METRICS_FIRST_ROUTE + i);
    }
    ASSERT_INT_EQ(wm->nlabels, TR_METRICS_ROUTES);
    ASSERT_INT_EQ(tr_metrics_route_slot(wm, "GET /one-too-many"), TR_METRICS_OTHER);
    ASSERT_INT_EQ(tr_metrics_route_slot(wm, "POST /a"), b); /* known labels still find theirs */
    free_metrics(m);
}

TEST_IMPL(metrics_count)
{
    tr_metrics_t *m = new_metrics(1);
    tr_worker_metrics_t *wm = &m->workers[0];
    unsigned s = tr_metrics_route_slot(wm, "GET /x");
    tr_metrics_count(wm, s, 200, 0.001);
    tr_metrics_count(wm, s, 200, 0.2);
    tr_metrics_count(wm, s, 404, 30);
    tr_route_metrics_t *rm = &wm->routes[s];
    ASSERT_INT_EQ(rm->status[0], 200);
    ASSERT_INT_EQ(rm->count[0], 2);
    ASSERT_INT_EQ(rm->status[1], 404);
    ASSERT_INT_EQ(rm->count[1], 1);
    ASSERT_INT_EQ(rm->buckets[0], 1);                      /* <= .005 */
    ASSERT_INT_EQ(rm->buckets[5], 1);                      /* <= .25 */
    ASSERT_INT_EQ(rm->buckets[TR_METRICS_BUCKETS - 1], 1); /* +Inf */
    /* More distinct statuses than entries: the rest share the last one. */
    for (int st = 500; st < 500 + TR_METRICS_STATUSES + 3; st++)
        tr_metrics_count(wm, s, st, 0);
    ASSERT_INT_EQ(rm->status[TR_METRICS_STATUSES - 1], 0);
    ASSERT_INT_EQ(rm->count[TR_METRICS_STATUSES - 1], (TR_METRICS_STATUSES + 3) - (TR_METRICS_STATUSES - 1 - 2));
    free_metrics(m);
}

static int contains(const tr_buf_t *out, const char *s)
{
    return tr_test_contains(out->data, out->len, s);
}

TEST_IMPL(metrics_render)
{
    tr_metrics_t *m = new_metrics(2);
    static tr_shared_t shared;
    memset(&shared, 0, sizeof(shared));
    shared.workers[0].pid = 10;
    shared.reloads = 3;
    /* The same label in two workers' tables, at different slots: summed as one route. */
    tr_worker_metrics_t *w0 = &m->workers[0], *w1 = &m->workers[1];
    tr_metrics_route_slot(w1, "GET /first");
    unsigned a0 = tr_metrics_route_slot(w0, "GET /q\"uote\\d");
    unsigned a1 = tr_metrics_route_slot(w1, "GET /q\"uote\\d");
    ASSERT(a0 != a1);
    tr_metrics_count(w0, a0, 200, 0.003);
    tr_metrics_count(w1, a1, 200, 0.07);
    tr_metrics_count(w1, TR_METRICS_UNMATCHED, 404, 0);
    tr_bufpool_t bp;
    memset(&bp, 0, sizeof(bp));
    tr_buf_t out = {0};
    tr_metrics_render(&bp, &out, m, &shared, 2);
    tr_buf_append(&bp, &out, "", 1);
    ASSERT(contains(&out, "# TYPE triage_http_requests_total counter\n"));
    ASSERT(contains(&out, "triage_http_requests_total{route=\"GET /q\\\"uote\\\\d\",status=\"200\"} 2\n"));
    ASSERT(contains(&out, "triage_http_requests_total{route=\"unmatched\",status=\"404\"} 1\n"));
    ASSERT(!contains(&out, "route=\"GET /first\",status")); /* no requests: no samples */
    ASSERT(
        contains(&out, "triage_http_request_duration_seconds_bucket{route=\"GET /q\\\"uote\\\\d\",le=\"0.005\"} 1\n"));
    ASSERT(
        contains(&out, "triage_http_request_duration_seconds_bucket{route=\"GET /q\\\"uote\\\\d\",le=\"0.05\"} 1\n"));
    ASSERT(contains(&out, "triage_http_request_duration_seconds_bucket{route=\"GET /q\\\"uote\\\\d\",le=\"0.1\"} 2\n"));
    ASSERT(
        contains(&out, "triage_http_request_duration_seconds_bucket{route=\"GET /q\\\"uote\\\\d\",le=\"+Inf\"} 2\n"));
    ASSERT(contains(&out, "triage_http_request_duration_seconds_count{route=\"GET /q\\\"uote\\\\d\"} 2\n"));
    ASSERT(contains(&out, "triage_workers_up 1\n"));
    ASSERT(contains(&out, "triage_reloads_total 3\n"));
    tr_buf_release(&bp, &out);
    tr_bufpool_destroy(&bp);
    free_metrics(m);
}

TEST_IMPL(log_json_escape)
{
    char out[64];
    const char in[] = "/a\"b\\c\x01\x7f\xc3\xa9?x=1";
    size_t n = tr_log_json_escape(out, sizeof(out), in, sizeof(in) - 1);
    ASSERT(tr_test_mem_eq(out, n, "/a\\\"b\\\\c\\u0001\\u007f\\u00c3\\u00a9?x=1"));
    /* An escape that does not fit is left out whole. */
    n = tr_log_json_escape(out, 3, "ab\"cd", 5);
    ASSERT(tr_test_mem_eq(out, n, "ab"));
    n = tr_log_json_escape(out, 4, "ab\x01", 3);
    ASSERT(tr_test_mem_eq(out, n, "ab"));
}
