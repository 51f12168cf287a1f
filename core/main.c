/*
 * triage: serve an application (the master process), `triage reload` to ask a running server to
 * reload its code through the admin listener, `triage backup DEST` to copy its store, or `triage
 * upgrade` to replace a running server's binary without refusing a connection (upgrade.h).
 */
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "master.h"
#include "store.h"
#include "upgrade.h"

/* POST /_triage/reload to the admin listener and print the answer; 0 when the reload went live. */
static int reload_command(int argc, char **argv)
{
    char host[256] = "127.0.0.1";
    int port = 9180;
    for (int i = 0; i < argc; i++) {
        const char *addr = NULL;
        if (strcmp(argv[i], "--admin") == 0 && i + 1 < argc)
            addr = argv[++i];
        else if (strncmp(argv[i], "--admin=", 8) == 0)
            addr = argv[i] + 8;
        if (addr != NULL && tr_config_parse_addr(addr, host, sizeof(host), &port) != 0) {
            fprintf(stderr, "triage reload: --admin wants HOST:PORT\n");
            return 2;
        }
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    char service[16];
    snprintf(service, sizeof(service), "%d", port);
    if (getaddrinfo(host, service, &hints, &res) != 0) {
        fprintf(stderr, "triage reload: cannot resolve %s\n", host);
        return 2;
    }
    int fd = socket(res->ai_family, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
        fprintf(stderr, "triage reload: no server answers on %s:%d\n", host, port);
        freeaddrinfo(res);
        return 2;
    }
    freeaddrinfo(res);
    static const char req[] = "POST /_triage/reload HTTP/1.1\r\nHost: triage\r\nContent-Length: 0\r\n\r\n";
    if (write(fd, req, sizeof(req) - 1) != (ssize_t)sizeof(req) - 1) {
        perror("triage reload");
        return 2;
    }
    char buf[16384];
    size_t len = 0;
    ssize_t n;
    while (len < sizeof(buf) - 1 && (n = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0)
        len += (size_t)n;
    buf[len] = '\0';
    close(fd);
    const char *body = strstr(buf, "\r\n\r\n");
    printf("%s\n", body ? body + 4 : buf);
    return strncmp(buf, "HTTP/1.1 200", 12) == 0 ? 0 : 1;
}

/* triage backup DEST [--data DIR]: a consistent copy of the store, taken while the server runs. */
static int backup_command(int argc, char **argv)
{
    const char *dest = NULL, *data = "data";
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--data") == 0 && i + 1 < argc)
            data = argv[++i];
        else if (strncmp(argv[i], "--data=", 7) == 0)
            data = argv[i] + 7;
        else if (dest == NULL && argv[i][0] != '-')
            dest = argv[i];
        else {
            fprintf(stderr, "triage backup: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (dest == NULL) {
        fprintf(stderr, "usage: triage backup DEST [--data DIR]\n");
        return 2;
    }
    if (access(dest, F_OK) == 0) {
        fprintf(stderr, "triage backup: %s exists already; give a new file\n", dest);
        return 2;
    }
    char dir[4096], err[512];
    if (tr_config_data_dir(data, dir, sizeof(dir)) != 0 || tr_store_backup(dir, dest, err, sizeof(err)) != 0) {
        fprintf(stderr, "triage backup: %s\n", err);
        return 1;
    }
    printf("%s/" TR_STORE_FILE " copied to %s\n", dir, dest);
    return 0;
}

int main(int argc, char **argv)
{
    tr_upgrade_remember(argc, argv);
    if (argc > 1 && strcmp(argv[1], "reload") == 0)
        return reload_command(argc - 2, argv + 2);
    if (argc > 1 && strcmp(argv[1], "backup") == 0)
        return backup_command(argc - 2, argv + 2);
    if (argc > 1 && strcmp(argv[1], "upgrade") == 0)
        return tr_upgrade_command(argc - 2, argv + 2);
    tr_config_t cfg;
    int rc = tr_config_parse(&cfg, argc, argv);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    rc = tr_log_open(cfg.error_log, cfg.access_log);
    if (rc != 0) {
        fprintf(stderr, "triage: cannot open a log file: %s\n", strerror(-rc));
        return 1;
    }
    return tr_master_run(&cfg);
}
