/*
 * ceiling: the machine's ceiling for a keep-alive HTTP/1.1 responder.
 *
 * One process per CPU, each with its own SO_REUSEPORT listener and a
 * level-triggered epoll loop (one read and one write per request). It parses
 * nothing: every "\r\n\r\n" it reads
 * (a request's end, for requests without a body) is answered with one fixed
 * 200 response carrying the JSON of one protocol. Pipelined requests are
 * answered once each.
 *
 *     ceiling [PORT] [PROCESSES]      (or PORT in the environment)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define BODY                                                                                                           \
    "{\"id\":\"NCT04356798\",\"title\":\"Remdesivir for severe COVID-19: a randomized phase III trial\","              \
    "\"sponsor\":\"Gilead Sciences\",\"phase\":\"III\",\"status\":\"completed\","                                      \
    "\"createdAt\":\"2020-04-22T08:00:00Z\"}"

static char response[512];
static size_t response_len;

struct conn {
    unsigned char state; /* how much of "\r\n\r\n" was matched at the end of the last read */
    unsigned pending;    /* responses still owed */
    size_t offset;       /* bytes of the current response already written */
    int want_out;        /* EPOLLOUT registered: a response is waiting for the socket */
};

static struct conn *conns;
static int max_fds;

static int listener(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("socket");
        exit(1);
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("bind");
        exit(1);
    }
    if (listen(fd, -1) < 0) {
        perror("listen");
        exit(1);
    } /* -1: the kernel's somaxconn */
    return fd;
}

/* Writes what is owed; returns -1 when the connection must be closed. */
static int flush(int fd, struct conn *c)
{
    char buf[16384];
    while (c->pending) {
        size_t n = 0;
        /* the rest of the current response, then as many whole ones as fit */
        size_t first = response_len - c->offset;
        memcpy(buf, response + c->offset, first);
        n = first;
        unsigned k = 1;
        while (k < c->pending && n + response_len <= sizeof buf) {
            memcpy(buf + n, response, response_len);
            n += response_len;
            k++;
        }
        ssize_t w = write(fd, buf, n);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            if (errno == EINTR)
                continue;
            return -1;
        }
        size_t done = (size_t)w;
        if (done < first) {
            c->offset += done;
            return 0;
        }
        done -= first;
        c->pending--;
        c->offset = 0;
        c->pending -= done / response_len;
        c->offset = done % response_len;
        if (done < n - first)
            return 0; /* short write: wait for EPOLLOUT */
    }
    return 0;
}

static void drop(int efd, int fd)
{
    epoll_ctl(efd, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
}

static void serve(int port)
{
    int lfd = listener(port);
    int efd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(efd, EPOLL_CTL_ADD, lfd, &ev);
    struct epoll_event evs[512];
    char buf[65536];
    static const char end[] = "\r\n\r\n";

    for (;;) {
        int n = epoll_wait(efd, evs, 512, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("epoll_wait");
            exit(1);
        }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                for (;;) {
                    int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (cfd < 0)
                        break;
                    if (cfd >= max_fds) {
                        close(cfd);
                        continue;
                    }
                    int one = 1;
                    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    memset(&conns[cfd], 0, sizeof conns[cfd]);
                    /* Level-triggered and EPOLLIN only: one read and one write per request, the fewest
                     * system calls a keep-alive responder can make. EPOLLOUT only while a write is short. */
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = cfd};
                    epoll_ctl(efd, EPOLL_CTL_ADD, cfd, &cev);
                }
                continue;
            }
            struct conn *c = &conns[fd];
            int closing = 0;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                ssize_t r = read(fd, buf, sizeof buf); /* level-triggered: whatever is left is reported again */
                if (r > 0) {
                    for (ssize_t j = 0; j < r; j++) {
                        if (buf[j] == end[c->state]) {
                            if (++c->state == 4) {
                                c->pending++;
                                c->state = 0;
                            }
                        } else {
                            c->state = (buf[j] == '\r') ? 1 : 0;
                        }
                    }
                } else if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
                    closing = 1;
                }
            }
            if (!closing && flush(fd, c) < 0)
                closing = 1;
            if (!closing && (c->pending > 0) != c->want_out) {
                c->want_out = c->pending > 0;
                struct epoll_event mev = {.events = EPOLLIN | (c->want_out ? EPOLLOUT : 0), .data.fd = fd};
                epoll_ctl(efd, EPOLL_CTL_MOD, fd, &mev);
            }
            if (closing)
                drop(efd, fd);
        }
    }
}

static pid_t *kids;
static int nkids;

static void stop(int sig)
{
    for (int i = 0; i < nkids; i++)
        if (kids[i] > 0)
            kill(kids[i], SIGTERM);
    (void)sig;
}

int main(int argc, char **argv)
{
    const char *p = argc > 1 ? argv[1] : getenv("PORT");
    int port = p ? atoi(p) : 8080;
    long procs = argc > 2 ? atol(argv[2]) : sysconf(_SC_NPROCESSORS_ONLN);
    if (procs < 1)
        procs = 1;

    response_len = (size_t)snprintf(response, sizeof response,
                                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                                    "Connection: keep-alive\r\n\r\n%s",
                                    strlen(BODY), BODY);

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        max_fds = (int)rl.rlim_cur;
    }
    if (max_fds <= 0 || max_fds > 1 << 20)
        max_fds = 1 << 16;
    conns = calloc((size_t)max_fds, sizeof *conns);
    signal(SIGPIPE, SIG_IGN);

    /* bind once in the parent first so a busy port fails loudly and early */
    close(listener(port));

    kids = calloc((size_t)procs, sizeof *kids);
    nkids = (int)procs;
    for (long i = 0; i < procs; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            stop(0);
            exit(1);
        }
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            if (getppid() == 1)
                _exit(0);
            signal(SIGTERM, SIG_DFL);
            serve(port);
            _exit(0);
        }
        kids[i] = pid;
    }
    signal(SIGTERM, stop);
    signal(SIGINT, stop);
    int status, left = nkids;
    while (left > 0) {
        pid_t w = wait(&status);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        left--;
        stop(0); /* one gone: take the others down too */
    }
    return 0;
}
