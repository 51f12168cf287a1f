/* The 8:00 burst: N phones, each opening a new TCP connection, sending one POST with a body of its
 * own and closing, at most C connections in flight at once, as fast as they can be opened.
 *
 *     burst HOST PORT[,PORT...] PATH N C TIMEOUT_S RUNID [AUTHORIZATION]
 *
 * Phone i sends {"patientId":"B-<i>","submissionId":"<RUNID>-<i>",...} with the same key in an
 * Idempotency-Key header, AUTHORIZATION (when given) as its Authorization header, and "Connection:
 * close". With several ports (several servers and no balancer: two triage nodes on one database),
 * phone i goes to the (i mod ports)-th port, so the phones are spread evenly over the servers. One
 * thread, one epoll set, non-blocking connect(); a phone's latency runs from its connect() to the
 * last byte of its response (Content-Length, or the server's close). No phone retries. On exit one
 * JSON object goes to stdout:
 *
 *     {"phones":N,"concurrency":C,"sent":..,"acknowledged":..,"acknowledged_by_port":{"8080":..},
 *      "responses":{"200":..},
 *      "errors":{"connect":..,"write":..,"read":..,"closed":..,"timeout":..,"status":..},
 *      "errno":{"ECONNREFUSED":..},"elapsed_s":..,"all_acknowledged_s":..|null,
 *      "p50_ms":..,"p90_ms":..,"p99_ms":..,"max_ms":..}
 *
 * acknowledged = 2xx answers; the percentiles are over acknowledged phones; all_acknowledged_s is
 * the time from the first connect() to the last acknowledgment when every phone was acknowledged.
 * Built by bench/run (gcc -O2) into bench/.build/burst.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { S_FREE, S_CONNECTING, S_WRITING, S_READING };
enum { E_CONNECT, E_WRITE, E_READ, E_CLOSED, E_TIMEOUT, E_STATUS, E_KINDS };
static const char *kind_names[E_KINDS] = {"connect", "write", "read", "closed", "timeout", "status"};

#define INBUF 16384
#define OUTBUF 2048

typedef struct {
    int fd, state, status;
    long index;
    double started;
    size_t out_len, out_off, in_len, head_len;
    long content_length; /* -1: none given (read to the close) */
    char out[OUTBUF];
    char in[INBUF];
} phone_t;

static struct {
    int err;
    long n;
} errnos[64];
static int nerrnos;
static long status_counts[600];

#define MAX_PORTS 16
static int ports[MAX_PORTS];
static long acked_by_port[MAX_PORTS];
static int nports;

/* PORT[,PORT...] into ports[]; 0 when every one is a port number. */
static int parse_ports(const char *list)
{
    const char *s = list;
    while (*s != '\0') {
        char *end;
        long port = strtol(s, &end, 10);
        if (end == s || port < 1 || port > 65535 || nports == MAX_PORTS || (*end != ',' && *end != '\0'))
            return -1;
        ports[nports++] = (int)port;
        s = *end == ',' ? end + 1 : end;
    }
    return nports > 0 ? 0 : -1;
}

static long errs[E_KINDS]; /* phones that ended without a 2xx, by kind */
static long done;          /* phones ended, acknowledged or not */
static int inflight;

static void count_errno(int e)
{
    for (int i = 0; i < nerrnos; i++)
        if (errnos[i].err == e) {
            errnos[i].n++;
            return;
        }
    if (nerrnos < (int)(sizeof(errnos) / sizeof(errnos[0]))) {
        errnos[nerrnos].err = e;
        errnos[nerrnos].n = 1;
        nerrnos++;
    }
}

/* A phone ends: its connection closed, its slot free again; kind < 0 for an acknowledged one. */
static void finish(phone_t *p, int kind, int err)
{
    if (kind >= 0)
        errs[kind]++;
    if (err != 0)
        count_errno(err);
    if (p->fd >= 0)
        close(p->fd);
    p->fd = -1;
    p->state = S_FREE;
    inflight--;
    done++;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *v, long n, double p)
{
    if (n == 0)
        return -1;
    long i = (long)(p / 100.0 * (double)n + 0.999999) - 1;
    if (i < 0)
        i = 0;
    if (i >= n)
        i = n - 1;
    return v[i];
}

static void print_ms(const char *name, double v, int last)
{
    if (v < 0)
        printf("\"%s\":null%s", name, last ? "" : ",");
    else
        printf("\"%s\":%.3f%s", name, v * 1000.0, last ? "" : ",");
}

/* 1 when the response in p->in is complete (headers parsed, Content-Length bytes of body). */
static int parse_response(phone_t *p)
{
    if (p->head_len == 0) {
        char *end = memmem(p->in, p->in_len, "\r\n\r\n", 4);
        if (end == NULL)
            return 0;
        p->head_len = (size_t)(end - p->in) + 4;
        if (p->in_len < 12 || strncmp(p->in, "HTTP/1.", 7) != 0)
            p->status = 0;
        else
            p->status = atoi(p->in + 9);
        p->content_length = -1;
        for (char *line = memchr(p->in, '\n', p->head_len); line != NULL && line < end;
             line = memchr(line + 1, '\n', (size_t)(end - line))) {
            if (strncasecmp(line + 1, "Content-Length:", 15) == 0)
                p->content_length = strtol(line + 16, NULL, 10);
        }
    }
    return p->content_length >= 0 && p->in_len >= p->head_len + (size_t)p->content_length;
}

int main(int argc, char **argv)
{
    if (argc != 8 && argc != 9) {
        fprintf(stderr, "usage: %s HOST PORT[,PORT...] PATH N CONCURRENCY TIMEOUT_S RUNID [AUTHORIZATION]\n", argv[0]);
        return 2;
    }
    const char *host = argv[1], *path = argv[3], *run = argv[7];
    const char *authorization = argc == 9 ? argv[8] : NULL;
    long total = atol(argv[4]);
    int conc = atoi(argv[5]);
    double timeout = atof(argv[6]);
    if (total < 1 || conc < 1 || timeout <= 0 || parse_ports(argv[2]) != 0) {
        fprintf(stderr, "burst: bad arguments\n");
        return 2;
    }
    if (conc > total)
        conc = (int)total;
    struct sockaddr_in addr = {.sin_family = AF_INET};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "burst: %s is not an IPv4 address\n", host);
        return 2;
    }
    phone_t *ph = calloc((size_t)conc, sizeof(*ph));
    double *lat = malloc(sizeof(double) * (size_t)total);
    struct epoll_event *evs = malloc(sizeof(*evs) * (size_t)conc);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ph == NULL || lat == NULL || evs == NULL || ep < 0) {
        perror("burst");
        return 2;
    }
    for (int i = 0; i < conc; i++)
        ph[i].fd = -1;

    long next = 0, sent = 0, acked = 0, nlat = 0;
    double t0 = now_s(), last_ack = t0, last_scan = t0;

    while (done < total) {
        /* open phones until C are in flight */
        for (int i = 0; i < conc && next < total && inflight < conc; i++) {
            phone_t *p = &ph[i];
            if (p->state != S_FREE)
                continue;
            memset(p, 0, offsetof(phone_t, out));
            p->index = next++;
            int port = ports[p->index % nports];
            addr.sin_port = htons((uint16_t)port);
            inflight++;
            char body[512];
            int bl = snprintf(body, sizeof(body),
                              "{\"patientId\":\"B-%ld\",\"submissionId\":\"%s-%ld\","
                              "\"capturedAt\":\"2026-11-27T08:00:%02ld.000Z\",\"reportData\":"
                              "{\"q1\":%ld,\"q2\":\"mild\",\"fatigue\":%ld,\"sleepHours\":%ld.5}}",
                              p->index, run, p->index, p->index % 60, p->index % 5, p->index % 10, 4 + p->index % 5);
            p->out_len = (size_t)snprintf(p->out, OUTBUF,
                                          "POST %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: burst\r\n"
                                          "Content-Type: application/json\r\nIdempotency-Key: %s-%ld\r\n"
                                          "%s%s%s"
                                          "Content-Length: %d\r\nConnection: close\r\n\r\n%s",
                                          path, host, port, run, p->index, authorization ? "Authorization: " : "",
                                          authorization ? authorization : "", authorization ? "\r\n" : "", bl, body);
            p->started = now_s();
            p->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (p->fd < 0) {
                finish(p, E_CONNECT, errno);
                continue;
            }
            int one = 1;
            setsockopt(p->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            int r = connect(p->fd, (struct sockaddr *)&addr, sizeof(addr));
            if (r != 0 && errno != EINPROGRESS) {
                finish(p, E_CONNECT, errno);
                continue;
            }
            p->state = r == 0 ? S_WRITING : S_CONNECTING;
            struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)i};
            if (epoll_ctl(ep, EPOLL_CTL_ADD, p->fd, &ev) != 0) {
                finish(p, E_CONNECT, errno);
                continue;
            }
        }
        if (done >= total)
            break;

        int n = epoll_wait(ep, evs, conc, 50);
        if (n < 0 && errno != EINTR) {
            perror("burst: epoll_wait");
            return 2;
        }
        for (int k = 0; k < n; k++) {
            phone_t *p = &ph[evs[k].data.u32];
            if (p->state == S_FREE)
                continue;
            if (p->state == S_CONNECTING) {
                int err = 0;
                socklen_t len = sizeof(err);
                getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err != 0) {
                    finish(p, E_CONNECT, err);
                    continue;
                }
                p->state = S_WRITING;
            }
            if (p->state == S_WRITING) {
                ssize_t w = write(p->fd, p->out + p->out_off, p->out_len - p->out_off);
                if (w < 0) {
                    if (errno == EAGAIN || errno == EINTR)
                        continue;
                    finish(p, E_WRITE, errno);
                    continue;
                }
                p->out_off += (size_t)w;
                if (p->out_off < p->out_len)
                    continue;
                sent++;
                p->state = S_READING;
                struct epoll_event ev = {.events = EPOLLIN, .data.u32 = evs[k].data.u32};
                epoll_ctl(ep, EPOLL_CTL_MOD, p->fd, &ev);
                continue;
            }
            /* S_READING */
            for (;;) {
                if (p->in_len == INBUF) { /* a response larger than any this route sends */
                    finish(p, E_READ, EMSGSIZE);
                    break;
                }
                ssize_t r = read(p->fd, p->in + p->in_len, INBUF - p->in_len);
                if (r < 0) {
                    if (errno == EAGAIN || errno == EINTR)
                        break;
                    finish(p, E_READ, errno);
                    break;
                }
                if (r > 0)
                    p->in_len += (size_t)r;
                int complete = parse_response(p);
                if (!complete && r == 0 && p->head_len > 0 && p->content_length < 0)
                    complete = 1; /* no Content-Length: the close ends the body */
                if (complete) {
                    double t = now_s();
                    if (p->status >= 0 && p->status < 600)
                        status_counts[p->status]++;
                    if (p->status >= 200 && p->status < 300) {
                        acked++;
                        acked_by_port[p->index % nports]++;
                        lat[nlat++] = t - p->started;
                        last_ack = t;
                        finish(p, -1, 0);
                    } else {
                        finish(p, E_STATUS, 0);
                    }
                    break;
                }
                if (r == 0) {
                    finish(p, E_CLOSED, 0);
                    break;
                }
            }
        }
        double t = now_s();
        if (t - last_scan >= 0.05) {
            last_scan = t;
            for (int i = 0; i < conc; i++)
                if (ph[i].state != S_FREE && t - ph[i].started > timeout)
                    finish(&ph[i], E_TIMEOUT, 0);
        }
    }
    double t_end = now_s();
    qsort(lat, (size_t)nlat, sizeof(double), cmp_double);

    printf("{\"phones\":%ld,\"concurrency\":%d,\"sent\":%ld,\"acknowledged\":%ld,\"acknowledged_by_port\":{", total,
           conc, sent, acked);
    for (int i = 0; i < nports; i++)
        printf("%s\"%d\":%ld", i ? "," : "", ports[i], acked_by_port[i]);
    printf("},\"responses\":{");
    int first = 1;
    for (int s = 0; s < 600; s++)
        if (status_counts[s]) {
            printf("%s\"%d\":%ld", first ? "" : ",", s, status_counts[s]);
            first = 0;
        }
    printf("},\"errors\":{");
    for (int e = 0; e < E_KINDS; e++)
        printf("%s\"%s\":%ld", e ? "," : "", kind_names[e], errs[e]);
    printf("},\"errno\":{");
    for (int i = 0; i < nerrnos; i++) {
        const char *name = strerrorname_np(errnos[i].err);
        printf("%s\"%s\":%ld", i ? "," : "", name ? name : "?", errnos[i].n);
    }
    printf("},\"elapsed_s\":%.4f,", t_end - t0);
    if (acked == total)
        printf("\"all_acknowledged_s\":%.4f,", last_ack - t0);
    else
        printf("\"all_acknowledged_s\":null,");
    print_ms("p50_ms", pct(lat, nlat, 50), 0);
    print_ms("p90_ms", pct(lat, nlat, 90), 0);
    print_ms("p99_ms", pct(lat, nlat, 99), 0);
    print_ms("max_ms", nlat ? lat[nlat - 1] : -1, 1);
    printf("}\n");
    return 0;
}
